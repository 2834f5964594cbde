"""What happens to a simulated message, pure and seeded: outcome, error code, callback timing.

Given a random source, `plan_message()` decides one message's fate and the status callbacks
Plivo would send for it: queued → sent (< 1 s) → delivered (1–10 s later) by default, a share
undelivered (carrier DLR with a real Plivo error code) or failed (never left Plivo), a share that
ends at `sent` for ever (carriers without delivery receipts, e.g. US/Canada, §2.3), some
callbacks duplicated and some `sent`/final pairs arriving in reverse order. A share of messages
loses every callback (the receiver never hears, the MDR still moves), and multipart messages
can get one timeline per part (old multipart behaviour, §2.4), and a share of delivered messages
gets a reply from its recipient (`reply_rate`: an inbound message, simulator/inbound.py).
`speed` divides every delay (tests use 50–1000).

Nothing here reads the clock or does I/O: the emitter (`simulator/emitter.py`) executes plans.
Segment counting is Plivo's rule as plivo/encoding.py writes it down, so the simulator bills a
text exactly as the sending side predicts.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from plivo_tracker.plivo.encoding import text_info

# Real Plivo codes (plivo-protocol.md §4) for the two kinds of failure.
UNDELIVERED_CODES = ("20", "30", "70", "80", "100", "200")
FAILED_CODES = ("40", "50", "420", "450", "900")
# Final states a message can end in. "sent" is final only where no DLR ever comes.
OUTCOMES = ("delivered", "undelivered", "failed", "sent")

_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class ScenarioConfig:
    """The knobs of the scenario; rates are shares of messages (or callbacks) in [0, 1].

    The outcome of a message is one draw split into failed | undelivered | sent-final |
    delivered, so the three outcome rates together must not exceed 1.
    """

    speed: float = 1.0
    fail_rate: float = 0.03  # failed: never left Plivo
    undelivered_rate: float = 0.05  # sent, then the carrier reported it undelivered
    dup_rate: float = 0.02  # share of callbacks sent twice
    reorder_rate: float = 0.02  # share of messages whose final callback beats `sent`
    sent_after: tuple[float, float] = (0.05, 1.0)
    delivered_after: tuple[float, float] = (1.0, 10.0)
    callback_drop_rate: float = 0.0  # share of messages whose every callback (and retry) is lost
    sent_final_rate: float = 0.0  # share of messages whose last status is `sent` (no DLR)
    sent_final_prefixes: tuple[str, ...] = ()  # destinations (digits) that never get a DLR
    per_part_callbacks: bool = False  # one UUID and one set of callbacks per part (§2.4, old)
    reply_rate: float = 0.0  # share of delivered messages whose recipient writes back
    reply_after: tuple[float, float] = (1.0, 8.0)  # seconds after the delivery receipt

    def __post_init__(self) -> None:
        if self.speed <= 0:
            raise ValueError("speed must be > 0")
        rates = (
            self.fail_rate,
            self.undelivered_rate,
            self.dup_rate,
            self.reorder_rate,
            self.callback_drop_rate,
            self.sent_final_rate,
            self.reply_rate,
        )
        if not all(0 <= rate <= 1 for rate in rates):
            raise ValueError("rates are between 0 and 1")
        if self.fail_rate + self.undelivered_rate + self.sent_final_rate > 1:
            raise ValueError("fail_rate + undelivered_rate + sent_final_rate must not exceed 1")
        if not all(p.isdigit() for p in self.sent_final_prefixes):
            raise ValueError("sent_final_prefixes are digits (country code first, no '+')")


@dataclass(frozen=True, slots=True)
class PlannedCallback:
    at: float  # seconds after the send was accepted
    status: str
    sequence: int
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class MessagePlan:
    """One message's fate: its final state, whether its callbacks are lost, and its timelines.

    `parts` holds one timeline per record Plivo keeps: one for the whole message (current
    behaviour), or one per part when `per_part_callbacks` is on and the text has several.
    """

    outcome: str
    error_code: str | None
    callbacks_lost: bool
    parts: tuple[tuple[PlannedCallback, ...], ...]
    # Seconds after the last callback when the recipient writes back (a delivered message
    # and `reply_rate`), else None.
    reply_after: float | None = None


def units(text: str | None) -> int:
    """How many parts Plivo bills a text as: Plivo's rule (`plivo.encoding.text_info`).

    A lone surrogate (possible through a JSON escape) is one UTF-16 unit that is not GSM-7,
    exactly like U+FFFD, so it is counted as that instead of making the encoder raise.
    """
    if not text:
        return 1
    return text_info(_SURROGATE.sub("\ufffd", text)).segments


def ends_at_sent(cfg: ScenarioConfig, dst: str) -> bool:
    """True when `dst` is on a carrier that never returns a delivery receipt."""
    digits = dst.lstrip("+")
    return any(digits.startswith(prefix) for prefix in cfg.sent_final_prefixes)


def _outcome(cfg: ScenarioConfig, roll: float, dst: str) -> str:
    # One draw, split in fixed order: a larger rate only ever widens its own slice.
    if roll < cfg.fail_rate:
        return "failed"
    if ends_at_sent(cfg, dst):
        return "sent"  # no DLR on this route, whatever the carrier would have said
    if roll < cfg.fail_rate + cfg.undelivered_rate:
        return "undelivered"
    if roll < cfg.fail_rate + cfg.undelivered_rate + cfg.sent_final_rate:
        return "sent"
    return "delivered"


def _error_code(outcome: str, rng: random.Random) -> str | None:
    if outcome == "failed":
        return rng.choice(FAILED_CODES)
    if outcome == "undelivered":
        return rng.choice(UNDELIVERED_CODES)
    return None


def _timeline(
    cfg: ScenarioConfig, rng: random.Random, outcome: str, error_code: str | None
) -> tuple[PlannedCallback, ...]:
    """The callbacks of one record ending in `outcome`, sorted by time (ties keep order)."""
    queued = PlannedCallback(0.01 / cfg.speed, "queued", 1)
    sent_at = rng.uniform(*cfg.sent_after) / cfg.speed
    if outcome == "failed":
        steps = [queued, PlannedCallback(sent_at, "failed", 2, error_code)]
    elif outcome == "sent":
        steps = [queued, PlannedCallback(sent_at, "sent", 2)]
    else:
        final_at = sent_at + rng.uniform(*cfg.delivered_after) / cfg.speed
        sent = PlannedCallback(sent_at, "sent", 2)
        final = PlannedCallback(final_at, outcome, 3, error_code)
        if rng.random() < cfg.reorder_rate:  # the DLR overtakes the `sent` callback
            sent, final = (
                PlannedCallback(final.at, sent.status, sent.sequence),
                PlannedCallback(sent.at, final.status, final.sequence, final.error_code),
            )
        steps = [queued, sent, final]
    extra = [
        PlannedCallback(
            step.at + rng.uniform(0.0, 1.0) / cfg.speed, step.status, step.sequence, step.error_code
        )
        for step in steps
        if rng.random() < cfg.dup_rate
    ]
    return tuple(sorted(steps + extra, key=lambda c: c.at))


def plan_message(
    cfg: ScenarioConfig, rng: random.Random, dst: str = "", parts: int = 1
) -> MessagePlan:
    """Decide one message's fate and callbacks.

    The outcome and the drop decision are the first two draws, whatever the config, so the
    same seed gives the same decisions and raising a rate never changes another slice. All
    parts of a message share its outcome; each part has its own timing.
    """
    roll = rng.random()
    lost = rng.random() < cfg.callback_drop_rate
    outcome = _outcome(cfg, roll, dst)
    code = _error_code(outcome, rng)
    records = parts if cfg.per_part_callbacks and parts > 1 else 1
    timelines = tuple(_timeline(cfg, rng, outcome, code) for _ in range(records))
    reply_after = None
    # Drawn last and only when replies are on: every other decision of a seed stays the same.
    if cfg.reply_rate and outcome == "delivered" and rng.random() < cfg.reply_rate:
        reply_after = rng.uniform(*cfg.reply_after) / cfg.speed
    return MessagePlan(outcome, code, lost, timelines, reply_after)


def plan(cfg: ScenarioConfig, rng: random.Random, dst: str = "") -> list[PlannedCallback]:
    """The callbacks for one single-part message, sorted by time (ties keep generation order)."""
    return list(plan_message(cfg, rng, dst).parts[0])
