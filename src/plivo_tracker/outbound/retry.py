"""The retry policy for sends, pure: what to do after an attempt failed, and when.

Plivo has no idempotency key (plivo-protocol.md §1.3), so the kind of failure decides:
- nothing reached Plivo (connection refused, DNS) or 429: retry with capped exponential
  backoff and full jitter, honouring Retry-After as a floor, within attempt and time limits;
- 400: permanent, the message fails with the reason;
- 401/403/404/405: about the account, not the message: the dispatcher pauses (PAUSING) and
  the message stays queued (the dispatcher decides; the policy is never asked);
- 5xx, a timeout or reset after the request was sent, a 2xx that is not the documented JSON:
  ambiguous. Never resend blindly; reconcile with List Messages first (docs/adr/0008).
Nothing here reads a clock or a random source: callers pass elapsed time and a random number.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Failure(StrEnum):
    NOT_SENT = "not_sent"  # connection refused, DNS failure: nothing reached Plivo
    RATE_LIMITED = "rate_limited"  # 429: refused before anything was created
    REJECTED = "rejected"  # 400: this message cannot be sent as is
    UNAUTHORIZED = "unauthorized"  # 401: wrong credentials, for every message
    FORBIDDEN = "forbidden"  # 403: geo permission (this message) or IP allow-list (all)
    MISCONFIGURED = "misconfigured"  # 404/405: wrong auth id or API address, for every message
    # 5xx, a timeout or reset after the request left, a 2xx that is not the documented JSON:
    # Plivo may have created the message.
    AMBIGUOUS = "ambiguous"


# Failures that say nothing about one message but about the account or address: dispatching
# pauses (every worker) and messages stay queued (the dispatcher probes until it works again).
PAUSING = frozenset({Failure.UNAUTHORIZED, Failure.FORBIDDEN, Failure.MISCONFIGURED})


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
        if failure == Failure.REJECTED or failure in PAUSING:
            return Decision(Action.GIVE_UP, reason=f"permanent: {failure.value}")
        if attempt >= self.max_attempts:
            return Decision(Action.GIVE_UP, reason=f"gave up after {attempt} attempts")
        delay = self.backoff(attempt, rand)
        if retry_after is not None and retry_after > delay:
            delay = min(retry_after, self.max_elapsed)
        if elapsed + delay > self.max_elapsed:
            return Decision(Action.GIVE_UP, reason=f"gave up after {elapsed:.0f} s")
        return Decision(Action.RETRY, delay=delay, reason=failure.value)
