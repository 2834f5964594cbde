"""Token bucket for PLIVO_MPS (pure): never more than rate × time + burst, and no starvation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plivo_tracker.outbound.ratelimit import Bucket, TokenBucket, take_up_to


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


@settings(max_examples=400, deadline=None)
@given(
    rate=st.sampled_from([0.5, 5.0, 48.0, 1000.0]),
    capacity=st.integers(min_value=1, max_value=60),
    tokens=st.floats(min_value=0, max_value=60, allow_nan=False),
    elapsed=st.floats(min_value=0, max_value=2, allow_nan=False),
    want=st.integers(min_value=1, max_value=100),
)
def test_taking_a_handful_grants_what_one_by_one_would(
    rate: float, capacity: int, tokens: float, elapsed: float, want: int
) -> None:
    """take_up_to(k) at one instant = k takes one after another at that instant."""
    tb = TokenBucket(rate=rate, capacity=capacity)
    start = Bucket(min(tokens, capacity), 1000.0)
    now = 1000.0 + elapsed
    got, [after], wait = take_up_to([(tb, start)], now, want)
    state, singles, single_wait = start, 0, 0.0
    while singles < want:
        state, single_wait = tb.take(state, now)
        if single_wait > 0:
            break
        singles += 1
    assert got == singles
    assert after.tokens == pytest.approx(state.tokens, abs=1e-6)
    assert (wait > 0) == (got < want)
    if got < want:
        assert wait == pytest.approx(single_wait)


@settings(max_examples=300, deadline=None)
@given(
    rates=st.lists(st.sampled_from([1.0, 5.0, 48.0]), min_size=1, max_size=3),
    steps=st.lists(
        st.tuples(st.floats(min_value=0, max_value=0.5, allow_nan=False), st.integers(1, 20)),
        max_size=100,
    ),
)
def test_handfuls_from_several_buckets_never_exceed_any(
    rates: list[float], steps: list[tuple[float, int]]
) -> None:
    """A send takes one token of each bucket (PLIVO_MPS and the API limit): whatever the
    handfuls asked for, no bucket hands out more than its burst plus its rate × time."""
    buckets = [(TokenBucket(rate=r, capacity=max(1, int(r))), None) for r in rates]
    states = [(tb, tb.full(0.0)) for tb, _ in buckets]
    now, granted = 0.0, 0
    for gap, want in steps:
        now += gap
        got, after, wait = take_up_to(states, now, want)
        assert 0 <= got <= want
        assert wait >= 0
        states = [(tb, b) for (tb, _), b in zip(states, after, strict=True)]
        granted += got
        for tb, _ in states:
            assert granted <= tb.capacity + tb.rate * now + 1e-6
