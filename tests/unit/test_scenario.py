"""The simulator's scenario (pure, seeded): realistic lifecycles, real error codes, knobs."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plivo_tracker.plivo.error_codes import KNOWN_CODES
from plivo_tracker.simulator.scenario import ScenarioConfig, plan, units

configs = st.builds(
    ScenarioConfig,
    speed=st.sampled_from([1.0, 10.0, 1000.0]),
    fail_rate=st.floats(0, 0.5),
    undelivered_rate=st.floats(0, 0.5),
    dup_rate=st.floats(0, 1),
    reorder_rate=st.floats(0, 1),
)


@settings(max_examples=300, deadline=None)
@given(configs, st.integers(min_value=0, max_value=2**32))
def test_every_plan_is_a_plivo_lifecycle(cfg: ScenarioConfig, seed: int) -> None:
    steps = plan(cfg, random.Random(seed))
    assert [s.at for s in steps] == sorted(s.at for s in steps)
    assert all(s.at >= 0 for s in steps)
    distinct = {(s.status, s.sequence, s.error_code) for s in steps}
    statuses = {status for status, _, _ in distinct}
    assert "queued" in statuses
    finals = statuses & {"delivered", "undelivered", "failed"}
    assert len(finals) == 1
    if finals == {"failed"}:
        assert statuses == {"queued", "failed"}
    else:
        assert "sent" in statuses
    for status, _, error_code in distinct:
        if status in ("failed", "undelivered"):
            assert error_code in KNOWN_CODES
        else:
            assert error_code is None
    # Sequences are fixed per status, so duplicates are exact retries.
    assert len({sequence for _, sequence, _ in distinct}) == len(distinct)


def test_rates_are_honoured_over_many_messages() -> None:
    cfg = ScenarioConfig(fail_rate=0.2, undelivered_rate=0.3, dup_rate=0.0)
    rng = random.Random(5)
    finals = [plan(cfg, rng)[-1].status for _ in range(4000)]
    assert finals.count("failed") / 4000 == pytest.approx(0.2, abs=0.03)
    assert finals.count("undelivered") / 4000 == pytest.approx(0.3, abs=0.03)


def test_default_timing() -> None:
    rng = random.Random(1)
    for _ in range(200):
        steps = {s.status: s.at for s in plan(ScenarioConfig(fail_rate=0, undelivered_rate=0), rng)}
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
        ("é" * 70, 1),
        ("é" * 71, 2),
    ],
)
def test_units(text: str | None, parts: int) -> None:
    assert units(text) == parts


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="speed"):
        ScenarioConfig(speed=0)
    with pytest.raises(ValueError, match="exceed"):
        ScenarioConfig(fail_rate=0.6, undelivered_rate=0.6)


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
    from plivo_tracker.messages.phone import text_info

    info = text_info(text)
    assert (info.encoding, info.segments) == (encoding, segments)
