"""The resend policy (pure): which final error codes get another attempt, how many, when."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plivo_tracker.outbound.resend import DEFAULT_CODES, ResendPolicy, parse_codes
from plivo_tracker.plivo.error_codes import KNOWN_CODES, describe

POLICY = ResendPolicy(codes=DEFAULT_CODES, max_attempts=4, base_delay=60, cap=600)


def test_defaults_resend_only_retryable_carrier_and_network_codes() -> None:
    assert parse_codes([]) == DEFAULT_CODES == {"20", "80"}
    for code in KNOWN_CODES:
        info = describe(code)
        assert info is not None
        if info.error_class != "retryable":
            assert code not in DEFAULT_CODES, code  # permanent and unclear codes are off
    assert "420" not in DEFAULT_CODES  # expired: an old OTP is worse than none
    assert "900" not in DEFAULT_CODES  # no credit: top up first


def test_listed_codes_replace_the_defaults_and_none_turns_it_off() -> None:
    assert parse_codes(["30", " 900 "]) == {"30", "900"}
    assert parse_codes(["none"]) == frozenset()
    assert parse_codes(["NONE"]) == frozenset()


def test_backoff_doubles_up_to_the_cap_and_stops_at_the_limit() -> None:
    assert [POLICY.delay("80", a) for a in (1, 2, 3, 4)] == [60, 120, 240, None]
    capped = ResendPolicy(codes=frozenset({"80"}), max_attempts=10, base_delay=100, cap=300)
    assert capped.delay("80", 5) == 300


def test_no_code_and_unlisted_codes_are_never_resent() -> None:
    for code in (None, "", "000", "30", "200", "99999"):
        assert POLICY.delay(code, 1) is None


def test_invalid_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="invalid"):
        ResendPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="invalid"):
        ResendPolicy(base_delay=100, cap=10)


codes = st.sampled_from([*KNOWN_CODES, "000", "", "12345"]) | st.none()


@settings(max_examples=500, deadline=None)
@given(
    codes,
    st.integers(min_value=1, max_value=50),
    st.frozensets(st.sampled_from(KNOWN_CODES)),
    st.integers(min_value=1, max_value=10),
    st.floats(min_value=0, max_value=3600, allow_nan=False),
)
def test_every_decision_respects_the_policy(
    code: str | None, attempt: int, listed: frozenset[str], limit: int, base: float
) -> None:
    policy = ResendPolicy(codes=listed, max_attempts=limit, base_delay=base, cap=max(base, 1800))
    delay = policy.delay(code, attempt)
    if delay is None:
        assert code not in listed or attempt >= limit or not code
        return
    assert code in listed
    assert attempt < limit  # a chain never grows past max_attempts
    assert 0 <= delay <= policy.cap
    later = policy.delay(code, attempt + 1)
    assert later is None or later >= delay  # never shorter than the one before
