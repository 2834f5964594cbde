"""Resending after a final failure, pure: which error codes get another attempt, how many, and
after how long (RESEND_ERROR_CODES, RESEND_MAX_ATTEMPTS, RESEND_BACKOFF_SECONDS).

Plivo never retries a message for us (plivo-protocol.md §4). A message that ends `failed` or
`undelivered` with a code where a new send later may succeed gets another message (linked by
`attempt_of`), after a growing delay, until the chain holds `max_attempts` messages. Defaults
by class: the carrier and network codes that say "retry later" (20, 80) are on; permanent
codes are off; 420 (expired in Plivo's queue: an old OTP is worse than none) and 900 (no
credit: a top-up is needed first) are retryable in Plivo's table but off unless listed; codes
of unclear class are off.
"""

from __future__ import annotations

from dataclasses import dataclass

from plivo_tracker.plivo.error_codes import normalize

# Retryable carrier/network failures: on by default.
DEFAULT_CODES = frozenset({"20", "80"})


@dataclass(frozen=True, slots=True)
class ResendPolicy:
    codes: frozenset[str] = DEFAULT_CODES
    max_attempts: int = 3  # messages in a chain, the original included
    base_delay: float = 60.0  # before the first resend; doubles each time
    cap: float = 1800.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_delay < 0 or self.cap < self.base_delay:
            raise ValueError("invalid resend policy")

    def delay(self, error_code: str | None, attempt: int) -> float | None:
        """Seconds before another attempt after attempt number `attempt` (1 = the original)
        failed with `error_code`; None when there is none."""
        code = normalize(error_code)
        if code is None or code not in self.codes or attempt >= self.max_attempts:
            return None
        return min(self.cap, self.base_delay * 2.0 ** (attempt - 1))


def parse_codes(values: list[str]) -> frozenset[str]:
    """RESEND_ERROR_CODES: empty → the defaults; "none" → nothing is resent; else these codes."""
    cleaned = [v.strip().lower() for v in values if v.strip()]
    if not cleaned:
        return DEFAULT_CODES
    if cleaned == ["none"]:
        return frozenset()
    return frozenset(normalize(v) or v for v in cleaned)
