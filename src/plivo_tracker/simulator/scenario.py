"""What happens to a simulated message, pure and seeded: outcome, error code, callback timing.

Given a random source, `plan()` returns the status callbacks Plivo would send for one message:
queued → sent (< 1 s) → delivered (1–10 s later) by default, a share undelivered (carrier DLR
with a real Plivo error code) or failed (never left Plivo), some callbacks duplicated and some
`sent`/final pairs arriving in reverse order. `speed` divides every delay (tests use 50–1000).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# Real Plivo codes (plivo-protocol.md §4) for the two kinds of failure.
UNDELIVERED_CODES = ("20", "30", "70", "80", "100", "200")
FAILED_CODES = ("40", "50", "420", "450", "900")
GSM_SINGLE, GSM_PART, UCS2_SINGLE, UCS2_PART = 160, 153, 70, 67


@dataclass(frozen=True, slots=True)
class ScenarioConfig:
    speed: float = 1.0
    fail_rate: float = 0.03  # failed: never left Plivo
    undelivered_rate: float = 0.05  # sent, then the carrier reported it undelivered
    dup_rate: float = 0.02  # share of callbacks sent twice
    reorder_rate: float = 0.02  # share of messages whose final callback beats `sent`
    sent_after: tuple[float, float] = (0.05, 1.0)
    delivered_after: tuple[float, float] = (1.0, 10.0)

    def __post_init__(self) -> None:
        if self.speed <= 0:
            raise ValueError("speed must be > 0")
        for rate in (self.fail_rate, self.undelivered_rate, self.dup_rate, self.reorder_rate):
            if not 0 <= rate <= 1:
                raise ValueError("rates are between 0 and 1")
        if self.fail_rate + self.undelivered_rate > 1:
            raise ValueError("fail_rate + undelivered_rate must not exceed 1")


@dataclass(frozen=True, slots=True)
class PlannedCallback:
    at: float  # seconds after the send was accepted
    status: str
    sequence: int
    error_code: str | None = None


def units(text: str | None) -> int:
    """How many parts Plivo bills a text as: GSM-7 160/153, otherwise UCS-2 70/67 (§1.1)."""
    if not text:
        return 1
    gsm = all(ord(ch) < 128 for ch in text)
    single, part = (GSM_SINGLE, GSM_PART) if gsm else (UCS2_SINGLE, UCS2_PART)
    return 1 if len(text) <= single else -(-len(text) // part)


def plan(cfg: ScenarioConfig, rng: random.Random) -> list[PlannedCallback]:
    """The callbacks for one message, sorted by time (ties keep generation order)."""
    roll = rng.random()
    queued_at = 0.01 / cfg.speed
    sent_at = rng.uniform(*cfg.sent_after) / cfg.speed
    if roll < cfg.fail_rate:
        steps = [
            PlannedCallback(queued_at, "queued", 1),
            PlannedCallback(sent_at, "failed", 2, rng.choice(FAILED_CODES)),
        ]
    else:
        final_at = sent_at + rng.uniform(*cfg.delivered_after) / cfg.speed
        if roll < cfg.fail_rate + cfg.undelivered_rate:
            final = PlannedCallback(final_at, "undelivered", 3, rng.choice(UNDELIVERED_CODES))
        else:
            final = PlannedCallback(final_at, "delivered", 3)
        sent = PlannedCallback(sent_at, "sent", 2)
        if rng.random() < cfg.reorder_rate:  # the DLR overtakes the `sent` callback
            sent, final = (
                PlannedCallback(final.at, sent.status, sent.sequence),
                PlannedCallback(sent.at, final.status, final.sequence, final.error_code),
            )
        steps = [PlannedCallback(queued_at, "queued", 1), sent, final]
    extra = [
        PlannedCallback(
            step.at + rng.uniform(0.0, 1.0) / cfg.speed, step.status, step.sequence, step.error_code
        )
        for step in steps
        if rng.random() < cfg.dup_rate
    ]
    return sorted(steps + extra, key=lambda c: c.at)
