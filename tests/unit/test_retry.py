"""The send retry policy (pure): permanent vs transient vs ambiguous, backoff bounds, limits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plivo_tracker.outbound.retry import PAUSING, Action, Failure, RetryPolicy

POLICY = RetryPolicy(base=1.0, factor=2.0, cap=60.0, max_attempts=6, max_elapsed=600.0)
# Only failures where nothing reached Plivo are retried by the policy: a 5xx may have created
# the message, so it is ambiguous (reconciled), never retried.
TRANSIENT = [Failure.NOT_SENT, Failure.RATE_LIMITED]

attempts = st.integers(min_value=1, max_value=20)
elapsed = st.floats(min_value=0, max_value=1000, allow_nan=False)
rands = st.floats(min_value=0, max_value=1, exclude_max=True, allow_nan=False)
retry_afters = st.none() | st.floats(min_value=0, max_value=2000, allow_nan=False)


@pytest.mark.parametrize("failure", [Failure.REJECTED, *sorted(PAUSING)])
def test_permanent_failures_are_never_retried(failure: Failure) -> None:
    decision = POLICY.decide(failure, attempt=1, elapsed=0, rand=0.5)
    assert decision.action == Action.GIVE_UP
    assert failure.value in decision.reason


def test_ambiguous_is_reconciled_never_resent() -> None:
    for attempt in (1, 3, 99):
        assert POLICY.decide(Failure.AMBIGUOUS, attempt, 0, 0.1).action == Action.RECONCILE


def test_backoff_grows_then_caps() -> None:
    ceilings = [POLICY.backoff(a, 0.999999) for a in range(1, 10)]
    assert ceilings[:4] == pytest.approx([1, 2, 4, 8], rel=1e-5)
    assert max(ceilings) == pytest.approx(60.0, rel=1e-5)


def test_retry_after_is_a_floor() -> None:
    decision = POLICY.decide(Failure.RATE_LIMITED, 1, 0, rand=0.0, retry_after=30.0)
    assert decision.action == Action.RETRY
    assert decision.delay == 30.0


def test_invalid_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid"):
        RetryPolicy(base=0)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(list(Failure)), attempts, elapsed, rands, retry_afters)
def test_decisions_respect_every_limit(
    failure: Failure, attempt: int, spent: float, rand: float, retry_after: float | None
) -> None:
    d = POLICY.decide(failure, attempt, spent, rand, retry_after)
    if failure not in TRANSIENT:
        assert d.action != Action.RETRY
        return
    if d.action == Action.RETRY:
        assert attempt < POLICY.max_attempts
        assert 0 <= d.delay
        assert spent + d.delay <= POLICY.max_elapsed
        assert d.delay <= max(POLICY.cap, retry_after or 0)
        if retry_after is not None:
            assert d.delay >= min(retry_after, POLICY.max_elapsed)
    else:
        assert d.action == Action.GIVE_UP
        wanted = POLICY.backoff(attempt, rand)
        if retry_after is not None and retry_after > wanted:
            wanted = min(retry_after, POLICY.max_elapsed)
        assert attempt >= POLICY.max_attempts or spent + wanted > POLICY.max_elapsed


@settings(max_examples=200, deadline=None)
@given(st.lists(rands, min_size=1, max_size=30))
def test_a_transient_failure_stops_within_the_attempt_limit(draws: list[float]) -> None:
    """However the jitter falls, a message that keeps failing is given up, not retried forever."""
    spent, attempt = 0.0, 1
    for rand in draws + [0.5] * POLICY.max_attempts:
        d = POLICY.decide(Failure.NOT_SENT, attempt, spent, rand)
        if d.action == Action.GIVE_UP:
            break
        spent += d.delay
        attempt += 1
    assert attempt <= POLICY.max_attempts
    assert spent <= POLICY.max_elapsed
