"""The matching rule for ambiguous sends (pure): what a List Messages answer says about one
message we may or may not have created at Plivo (docs/adr/0008)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from plivo_tracker.outbound.reconcile import (
    Expected,
    Verdict,
    list_filters,
    match,
    parse_mdr_time,
)

T0 = datetime(2026, 11, 29, 20, 0, 0, tzinfo=UTC)
EXPECTED = Expected(
    to="+14155550101",
    src="14155550100",
    type="sms",
    segments=1,
    first_attempt=T0,
    last_attempt=T0 + timedelta(seconds=10),
)


def mdr(
    uuid: str = "u-1", at: datetime = T0 + timedelta(seconds=2), **extra: Any
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "message_uuid": uuid,
        "message_direction": "outbound",
        "message_type": "sms",
        "from_number": "14155550100",
        "to_number": "14155550101",
        "message_time": at.strftime("%Y-%m-%d %H:%M:%S+00:00"),
        "units": 1,
    }
    row.update(extra)
    return row


def test_one_matching_message_is_found() -> None:
    result = match([mdr()], EXPECTED, set(), complete=True)
    assert result.verdict == Verdict.FOUND
    assert result.message_uuid == "u-1"


def test_nothing_on_a_complete_answer_is_not_found() -> None:
    assert match([], EXPECTED, set(), complete=True).verdict == Verdict.NOT_FOUND


def test_nothing_on_an_incomplete_answer_is_undecided() -> None:
    assert match([], EXPECTED, set(), complete=False).verdict == Verdict.UNDECIDED


def test_two_candidates_are_undecided() -> None:
    result = match([mdr("a"), mdr("b")], EXPECTED, set(), complete=True)
    assert result.verdict == Verdict.UNDECIDED
    assert set(result.candidates) == {"a", "b"}


def test_a_uuid_another_message_owns_is_never_adopted() -> None:
    result = match([mdr("theirs"), mdr("ours")], EXPECTED, {"theirs"}, complete=True)
    assert (result.verdict, result.message_uuid) == (Verdict.FOUND, "ours")
    assert match([mdr("theirs")], EXPECTED, {"theirs"}, complete=True).verdict == (
        Verdict.NOT_FOUND
    )


def test_each_fact_that_disagrees_rules_a_message_out() -> None:
    others = [
        mdr(to_number="14155550199"),
        mdr(from_number="14155550111"),
        mdr(message_direction="inbound"),
        mdr(message_type="mms"),
        mdr(units=3),
        mdr(at=T0 - timedelta(minutes=5)),
        mdr(at=T0 + timedelta(minutes=5)),
    ]
    for other in others:
        assert match([other], EXPECTED, set(), complete=True).verdict == Verdict.NOT_FOUND, other


def test_numbers_compare_by_digits_and_times_by_their_offset() -> None:
    local = (T0 + timedelta(seconds=5)).astimezone().strftime("%Y-%m-%d %H:%M:%S%z")
    plus = mdr(to_number="+1 (415) 555-0101", from_number="+14155550100", message_time=local)
    assert match([plus], EXPECTED, set(), complete=True).verdict == Verdict.FOUND
    india = "2026-11-30 01:30:05+05:30"  # = 20:00:05 UTC
    assert parse_mdr_time(india) == T0 + timedelta(seconds=5)
    assert match([mdr(message_time=india)], EXPECTED, set(), complete=True).verdict == (
        Verdict.FOUND
    )


def test_an_unreadable_time_cannot_be_ruled_out() -> None:
    result = match([mdr(message_time="yesterday")], EXPECTED, set(), complete=True)
    assert result.verdict == Verdict.UNDECIDED


def test_alphanumeric_and_powerpack_senders() -> None:
    alnum = Expected(
        to=EXPECTED.to,
        src="MyBrand",
        type="sms",
        segments=1,
        first_attempt=T0,
        last_attempt=T0,
    )
    assert match([mdr(from_number="mybrand")], alnum, set(), complete=True).verdict == (
        Verdict.FOUND
    )
    assert match([mdr(from_number="Other")], alnum, set(), complete=True).verdict == (
        Verdict.NOT_FOUND
    )
    pool = Expected(
        to=EXPECTED.to,
        src="powerpack:pp-1",
        type="sms",
        segments=1,
        first_attempt=T0,
        last_attempt=T0,
    )
    assert match([mdr(from_number="14155559999")], pool, set(), complete=True).verdict == (
        Verdict.FOUND
    )


def test_list_filters_follow_the_documented_forms() -> None:
    filters = list_filters(EXPECTED)
    assert filters["to_number"] == "+14155550101"
    assert filters["from_number"] == "14155550100"
    assert filters["message_direction"] == "outbound"
    assert filters["message_time__gte"] == "2026-11-29 19:59:00"  # before the first attempt
    assert filters["message_time__lte"] == "2026-11-29 20:01:10"
    pool = Expected(
        to=EXPECTED.to,
        src="powerpack:pp",
        type="sms",
        segments=None,
        first_attempt=T0,
        last_attempt=T0,
    )
    assert "from_number" not in list_filters(pool)


# ---- properties ---------------------------------------------------------------------------

offsets = st.integers(min_value=-600, max_value=600)
uuids = st.sampled_from(["a", "b", "c", "d", "e"])
rows = st.lists(
    st.builds(
        lambda uuid, off, to, frm, units: mdr(
            uuid, T0 + timedelta(seconds=off), to_number=to, from_number=frm, units=units
        ),
        uuids,
        offsets,
        st.sampled_from(["14155550101", "14155550102"]),
        st.sampled_from(["14155550100", "14155550109"]),
        st.sampled_from([1, 2]),
    ),
    max_size=8,
)


@settings(max_examples=400, deadline=None)
@given(rows, st.sets(uuids), st.booleans())
def test_the_verdict_is_consistent_with_the_candidates(
    answer: list[dict[str, Any]], owned: set[str], complete: bool
) -> None:
    result = match(answer, EXPECTED, owned, complete=complete)
    start, end = EXPECTED.window()
    fits = {
        r["message_uuid"]
        for r in answer
        if r["message_uuid"] not in owned
        and r["to_number"] == "14155550101"
        and r["from_number"] == "14155550100"
        and r["units"] == 1
        and start <= parse_mdr_time(r["message_time"]) <= end  # type: ignore[operator]
    }
    if result.verdict == Verdict.FOUND:
        # Never a UUID another message owns, never one that disagrees, never a guess.
        assert fits == {result.message_uuid}
    elif result.verdict == Verdict.NOT_FOUND:
        assert complete
        assert not fits
    else:
        assert len(fits) > 1 or not complete


@settings(max_examples=200, deadline=None)
@given(rows, st.sets(uuids), st.randoms(use_true_random=False))
def test_the_order_of_the_answer_does_not_matter(
    answer: list[dict[str, Any]], owned: set[str], rnd: Any
) -> None:
    shuffled = list(answer)
    rnd.shuffle(shuffled)
    a = match(answer, EXPECTED, owned, complete=True)
    b = match(shuffled, EXPECTED, owned, complete=True)
    assert (a.verdict, a.message_uuid, set(a.candidates)) == (
        b.verdict,
        b.message_uuid,
        set(b.candidates),
    )
