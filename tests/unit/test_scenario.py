"""The simulator's scenario (pure, seeded): realistic lifecycles, real error codes, knobs,
dropped callbacks, sent-final routes, per-part timelines and the product's segment count."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plivo_tracker.plivo.encoding import text_info
from plivo_tracker.plivo.error_codes import KNOWN_CODES
from plivo_tracker.simulator.scenario import (
    OUTCOMES,
    ScenarioConfig,
    ends_at_sent,
    plan,
    plan_message,
    units,
)

configs = st.builds(
    ScenarioConfig,
    speed=st.sampled_from([1.0, 10.0, 1000.0]),
    fail_rate=st.floats(0, 0.4),
    undelivered_rate=st.floats(0, 0.4),
    dup_rate=st.floats(0, 1),
    reorder_rate=st.floats(0, 1),
    callback_drop_rate=st.floats(0, 1),
    sent_final_rate=st.floats(0, 0.2),
)
seeds = st.integers(min_value=0, max_value=2**32)
rates = st.floats(0, 1)


@settings(max_examples=300, deadline=None)
@given(configs, seeds, st.sampled_from(["14155550101", "15555550101"]))
def test_every_plan_is_a_plivo_lifecycle(cfg: ScenarioConfig, seed: int, dst: str) -> None:
    cfg = ScenarioConfig(**{**_asdict(cfg), "sent_final_prefixes": ("1555",)})
    steps = plan(cfg, random.Random(seed), dst)
    assert [s.at for s in steps] == sorted(s.at for s in steps)
    assert all(s.at >= 0 for s in steps)
    distinct = {(s.status, s.sequence, s.error_code) for s in steps}
    statuses = {status for status, _, _ in distinct}
    assert "queued" in statuses
    finals = statuses & {"delivered", "undelivered", "failed"}
    assert len(finals) <= 1
    if finals == {"failed"}:
        assert statuses == {"queued", "failed"}
    elif not finals:
        assert statuses == {"queued", "sent"}  # a route without delivery receipts
    else:
        assert "sent" in statuses
        assert not dst.startswith("1555")
    for status, _, error_code in distinct:
        if status in ("failed", "undelivered"):
            assert error_code in KNOWN_CODES
        else:
            assert error_code is None
    # Sequences are fixed per status, so duplicates are exact retries.
    assert len({sequence for _, sequence, _ in distinct}) == len(distinct)


def _asdict(cfg: ScenarioConfig) -> dict[str, object]:
    return {name: getattr(cfg, name) for name in ScenarioConfig.__slots__}


def test_rates_are_honoured_over_many_messages() -> None:
    cfg = ScenarioConfig(
        fail_rate=0.2, undelivered_rate=0.3, sent_final_rate=0.1, callback_drop_rate=0.25
    )
    rng = random.Random(5)
    plans = [plan_message(cfg, rng) for _ in range(4000)]
    outcomes = [p.outcome for p in plans]
    assert outcomes.count("failed") / 4000 == pytest.approx(0.2, abs=0.03)
    assert outcomes.count("undelivered") / 4000 == pytest.approx(0.3, abs=0.03)
    assert outcomes.count("sent") / 4000 == pytest.approx(0.1, abs=0.03)
    assert sum(p.callbacks_lost for p in plans) / 4000 == pytest.approx(0.25, abs=0.03)


def test_default_timing() -> None:
    rng = random.Random(1)
    cfg = ScenarioConfig(fail_rate=0, undelivered_rate=0, dup_rate=0)
    for _ in range(200):
        steps = {s.status: s.at for s in plan(cfg, rng)}
        if steps["sent"] < steps["delivered"]:
            assert steps["sent"] < 1.0
            assert 1.0 <= steps["delivered"] - steps["sent"] <= 10.0


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        (None, 1),
        ("x" * 160, 1),
        ("x" * 161, 2),
        ("x" * 306, 2),
        ("x" * 307, 3),
        ("é" * 160, 1),  # é is GSM-7 (basic set), not UCS-2
        ("é" * 161, 2),
        ("{" * 80, 1),  # an extension character costs two septets
        ("{" * 81, 2),
        ("你" * 70, 1),
        ("你" * 71, 2),
        ("\ud800" * 71, 2),  # a lone surrogate (JSON escape) is one UCS-2 unit, never a crash
    ],
)
def test_units(text: str | None, parts: int) -> None:
    assert units(text) == parts


# Texts around the part boundaries: GSM basic, extension table, and non-GSM characters.
_ALPHABET = st.sampled_from(list("aZ0 @£é\n") + list("{}[]~^€|") + list("你👋ç\u00a0"))
texts = st.one_of(st.text(max_size=400), st.text(alphabet=_ALPHABET, max_size=400))


@settings(max_examples=500, deadline=None)
@given(texts)
def test_the_simulator_bills_what_the_product_predicts(text: str) -> None:
    assert units(text) == text_info(text).segments


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="speed"):
        ScenarioConfig(speed=0)
    with pytest.raises(ValueError, match="exceed"):
        ScenarioConfig(fail_rate=0.6, undelivered_rate=0.6)
    with pytest.raises(ValueError, match="exceed"):
        ScenarioConfig(fail_rate=0.5, undelivered_rate=0.3, sent_final_rate=0.3)
    with pytest.raises(ValueError, match="digits"):
        ScenarioConfig(sent_final_prefixes=("+1555",))


@given(st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1 + 1e-9), st.just(math.nan)))
def test_drop_and_sent_final_rates_outside_0_1_are_refused(rate: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        ScenarioConfig(callback_drop_rate=rate)
    with pytest.raises(ValueError, match="between 0 and 1"):
        ScenarioConfig(sent_final_rate=rate, fail_rate=0, undelivered_rate=0)


@settings(max_examples=200, deadline=None)
@given(rates, rates, seeds)
def test_drop_decision_is_seeded_and_follows_its_rate(low: float, high: float, seed: int) -> None:
    low, high = sorted((low, high))

    def lost(rate: float) -> bool:
        cfg = ScenarioConfig(callback_drop_rate=rate)
        return plan_message(cfg, random.Random(seed)).callbacks_lost

    assert lost(low) == lost(low)  # same seed, same decision
    assert lost(0.0) is False
    assert lost(1.0) is True
    assert not lost(low) or lost(high)  # a higher rate only ever drops more
    # Dropping callbacks never changes what happens to the message itself.
    same = ScenarioConfig(callback_drop_rate=high)
    other = ScenarioConfig(callback_drop_rate=low)
    assert (
        plan_message(same, random.Random(seed)).parts
        == plan_message(other, random.Random(seed)).parts
    )


@settings(max_examples=200, deadline=None)
@given(rates, rates, seeds)
def test_sent_final_decision_is_seeded_and_follows_its_rate(
    low: float, high: float, seed: int
) -> None:
    low, high = sorted((low, high))

    def outcome(rate: float) -> str:
        cfg = ScenarioConfig(fail_rate=0, undelivered_rate=0, sent_final_rate=rate)
        return plan_message(cfg, random.Random(seed)).outcome

    assert outcome(low) == outcome(low)
    assert outcome(low) in ("sent", "delivered")
    assert outcome(0.0) == "delivered"
    assert outcome(1.0) == "sent"
    assert outcome(low) != "sent" or outcome(high) == "sent"


@settings(max_examples=200, deadline=None)
@given(configs, seeds)
def test_sent_final_prefixes_never_get_a_receipt(cfg: ScenarioConfig, seed: int) -> None:
    cfg = ScenarioConfig(**{**_asdict(cfg), "sent_final_prefixes": ("1555", "1604")})
    for dst, no_dlr in (("+15555550101", True), ("16045550101", True), ("14155550101", False)):
        assert ends_at_sent(cfg, dst) is no_dlr
        decided = plan_message(cfg, random.Random(seed), dst)
        assert decided.outcome in OUTCOMES
        if no_dlr:
            assert decided.outcome in ("sent", "failed")
            last = max(decided.parts[0], key=lambda c: c.sequence)
            assert last.status == decided.outcome


@settings(max_examples=100, deadline=None)
@given(seeds, st.integers(min_value=1, max_value=8), st.booleans())
def test_per_part_timelines_share_one_fate(seed: int, parts: int, per_part: bool) -> None:
    cfg = ScenarioConfig(fail_rate=0.3, undelivered_rate=0.3, per_part_callbacks=per_part)
    decided = plan_message(cfg, random.Random(seed), parts=parts)
    assert len(decided.parts) == (parts if per_part else 1)
    for timeline in decided.parts:
        finals = {c.status for c in timeline} - {"queued", "sent"}
        assert finals == ({decided.outcome} - {"sent"})
        assert {c.error_code for c in timeline if c.status == decided.outcome} == {
            decided.error_code
        }


@pytest.mark.parametrize(
    ("text", "encoding", "segments"),
    [
        ("x" * 160, "GSM-7", 1),
        ("x" * 161, "GSM-7", 2),
        ("{" * 80, "GSM-7", 1),  # extension characters count twice
        ("{" * 81, "GSM-7", 2),
        ("Grüße", "GSM-7", 1),  # ü and ß are in the GSM basic set
        ("你好", "UCS-2", 1),
        ("👋" * 35, "UCS-2", 1),  # a surrogate pair is two UCS-2 units
        ("👋" * 36, "UCS-2", 2),
    ],
)
def test_text_info(text: str, encoding: str, segments: int) -> None:
    from plivo_tracker.plivo.encoding import text_info

    info = text_info(text)
    assert (info.encoding, info.segments) == (encoding, segments)
