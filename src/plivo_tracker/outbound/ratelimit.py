"""Token bucket for PLIVO_MPS, pure: the clock is passed in and the state is a value.

The state is two numbers, so several workers can share one bucket by keeping it in a row they
update under a lock (the dispatcher's job); this module only does the arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Bucket:
    tokens: float
    updated: float  # clock reading (seconds) when `tokens` was computed


@dataclass(frozen=True, slots=True)
class TokenBucket:
    rate: float  # tokens per second (PLIVO_MPS)
    capacity: float  # burst size

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.capacity < 1:
            raise ValueError("rate must be > 0 and capacity >= 1")

    def full(self, now: float) -> Bucket:
        return Bucket(self.capacity, now)

    def refill(self, bucket: Bucket, now: float) -> Bucket:
        elapsed = max(0.0, now - bucket.updated)  # a clock going backwards adds nothing
        return Bucket(
            min(self.capacity, bucket.tokens + elapsed * self.rate), max(now, bucket.updated)
        )

    def take(self, bucket: Bucket, now: float, n: float = 1.0) -> tuple[Bucket, float]:
        """Take `n` tokens: (new state, 0.0) when there were enough, else (state, seconds to wait).

        A refusal changes nothing but the refill, so callers just ask again after the wait.
        """
        current = self.refill(bucket, now)
        if current.tokens >= n - self._tolerance(now):
            return Bucket(max(0.0, current.tokens - n), current.updated), 0.0
        return current, (n - current.tokens) / self.rate

    def available(self, bucket: Bucket, now: float) -> int:
        """Whole tokens `take` would hand out now, one after another."""
        return math.floor(self.refill(bucket, now).tokens + self._tolerance(now))

    def _tolerance(self, now: float) -> float:
        # After sleeping exactly the wait it was given, a caller must succeed even if floating
        # point (clock readings ~1e7 s carry ~2e-9 s of rounding) left the bucket a hair
        # short; otherwise it would spin on ever tinier waits.
        return _EPSILON + self.rate * 4 * math.ulp(max(abs(now), 1.0))


def take_up_to(
    buckets: Sequence[tuple[TokenBucket, Bucket]], now: float, want: int
) -> tuple[int, list[Bucket], float]:
    """Up to `want` tokens from every bucket at once (a send needs one of each): (how many,
    the buckets' new states, seconds until the next token when fewer than `want` were there;
    else 0.0). Taking k together grants exactly what k takes one after another at `now`
    would."""
    got = max(0, min([want, *(tb.available(state, now) for tb, state in buckets)]))
    after = [tb.take(state, now, got)[0] if got else tb.refill(state, now) for tb, state in buckets]
    if got >= want:
        return got, after, 0.0
    wait = max(tb.take(state, now)[1] for (tb, _), state in zip(buckets, after, strict=True))
    return got, after, wait
