"""The retry policy for sends, pure: what to do after an attempt failed, and when.

Plivo has no idempotency key (plivo-protocol.md §1.3), so the kind of failure decides:
- nothing reached Plivo (connection refused, DNS), 5xx, 429: retry with capped exponential
  backoff and full jitter, honouring Retry-After as a floor, within attempt and time limits;
- 400/403/404/405 and 401: permanent, the message fails with the reason (401 also means
  "stop dispatching": the credentials are wrong for every message);
- a timeout or reset after the request was sent: ambiguous. Never resend blindly; reconcile
  with Get/List Message first.
Nothing here reads a clock or a random source: callers pass elapsed time and a random number.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Failure(StrEnum):
    NOT_SENT = "not_sent"  # connection refused, DNS failure: nothing reached Plivo
    SERVER_ERROR = "server_error"  # 5xx
    RATE_LIMITED = "rate_limited"  # 429
    REJECTED = "rejected"  # 400, 403, 404, 405: this message cannot be sent as is
    UNAUTHORIZED = "unauthorized"  # 401: wrong credentials, for every message
    AMBIGUOUS = "ambiguous"  # timeout / reset after the request left: it may exist


class Action(StrEnum):
    RETRY = "retry"
    GIVE_UP = "give_up"
    RECONCILE = "reconcile"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    delay: float = 0.0  # seconds until the next attempt (RETRY only)
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base: float = 1.0  # first backoff, seconds
    factor: float = 2.0
    cap: float = 300.0  # longest single wait
    max_attempts: int = 8  # attempts in all, the first one included
    max_elapsed: float = 3 * 3600.0  # Plivo expires queued messages after 3 h (§1.5)

    def __post_init__(self) -> None:
        if self.base <= 0 or self.factor < 1 or self.cap < self.base or self.max_attempts < 1:
            raise ValueError("invalid retry policy")

    def backoff(self, attempt: int, rand: float) -> float:
        """Full-jitter delay after failed attempt number `attempt` (1-based); rand in [0, 1)."""
        ceiling = min(self.cap, self.base * self.factor ** (attempt - 1))
        return ceiling * rand

    def decide(
        self,
        failure: Failure,
        attempt: int,
        elapsed: float,
        rand: float,
        retry_after: float | None = None,
    ) -> Decision:
        """What to do after failed attempt number `attempt`, `elapsed` seconds after the first."""
        if failure == Failure.AMBIGUOUS:
            return Decision(Action.RECONCILE, reason="outcome unknown: look the message up")
        if failure in (Failure.REJECTED, Failure.UNAUTHORIZED):
            return Decision(Action.GIVE_UP, reason=f"permanent: {failure.value}")
        if attempt >= self.max_attempts:
            return Decision(Action.GIVE_UP, reason=f"gave up after {attempt} attempts")
        delay = self.backoff(attempt, rand)
        if retry_after is not None and retry_after > delay:
            delay = min(retry_after, self.max_elapsed)
        if elapsed + delay > self.max_elapsed:
            return Decision(Action.GIVE_UP, reason=f"gave up after {elapsed:.0f} s")
        return Decision(Action.RETRY, delay=delay, reason=failure.value)
