"""Token bucket for PLIVO_MPS (pure): never more than rate × time + burst, and no starvation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plivo_tracker.outbound.ratelimit import Bucket, TokenBucket


def test_burst_then_paced() -> None:
    tb = TokenBucket(rate=5, capacity=5)
    state = tb.full(0.0)
    for _ in range(5):
        state, wait = tb.take(state, 0.0)
        assert wait == 0.0
    state, wait = tb.take(state, 0.0)
    assert wait == pytest.approx(0.2)
    state, wait = tb.take(state, 0.2)
    assert wait == 0.0


def test_clock_going_backwards_adds_nothing() -> None:
    tb = TokenBucket(rate=1, capacity=1)
    state, _ = tb.take(tb.full(10.0), 10.0)
    state, wait = tb.take(state, 5.0)
    assert wait > 0
    assert state.tokens == 0


def test_invalid_bucket_is_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate=0, capacity=1)


@settings(max_examples=300, deadline=None)
@given(
    rate=st.sampled_from([0.25, 1.0, 5.0, 50.0]),
    capacity=st.integers(min_value=1, max_value=10),
    gaps=st.lists(st.floats(min_value=0, max_value=0.5, allow_nan=False), max_size=200),
)
def test_never_more_than_rate_times_time_plus_burst(
    rate: float, capacity: int, gaps: list[float]
) -> None:
    tb = TokenBucket(rate=rate, capacity=capacity)
    state: Bucket = tb.full(0.0)
    now, taken = 0.0, 0
    for gap in gaps:
        now += gap
        state, wait = tb.take(state, now)
        if wait == 0.0:
            taken += 1
        assert taken <= capacity + rate * now + 1e-9


@pytest.mark.parametrize("rate", [5.0, 50.0])
def test_a_greedy_sender_gets_the_rate(rate: float) -> None:
    """Sleeping exactly what take() asks for yields the configured rate (±5 %)."""
    tb = TokenBucket(rate=rate, capacity=1)
    state, now, sent = tb.full(0.0), 0.0, 0
    while now < 60.0:
        state, wait = tb.take(state, now)
        if wait == 0.0:
            sent += 1
        else:
            now += wait
    assert sent / 60.0 == pytest.approx(rate, rel=0.05)


@settings(max_examples=500, deadline=None)
@given(
    rate=st.floats(min_value=0.01, max_value=1000, allow_nan=False),
    tokens=st.floats(min_value=0, max_value=1, allow_nan=False),
    now=st.floats(min_value=0, max_value=1e7, allow_nan=False),
)
def test_waiting_the_given_time_always_succeeds(rate: float, tokens: float, now: float) -> None:
    tb = TokenBucket(rate=rate, capacity=1)
    state, wait = tb.take(Bucket(tokens, now), now)
    if wait > 0:
        _, again = tb.take(state, now + wait)
        assert again == 0.0
