"""The retention rules, pure: durations, cut-offs, which messages the purge may delete (chains
only whole), and when a message's text is no longer needed (STORE_MESSAGE_TEXT=false)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plivo_tracker.retention.rules import (
    EPOCH,
    Aged,
    BadDuration,
    Erasure,
    chains,
    cutoffs,
    judge,
    last_rollup_minute,
    messages_per_batch,
    parse_duration,
    purgeable,
    settled_for_good,
)

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
CUT = NOW - timedelta(days=90)
OLD = CUT - timedelta(days=1)


def aged(i: int, status: str = "delivered", **kw: object) -> Aged:
    values: dict[str, object] = {
        "id": i,
        "created_at": OLD,
        "updated_at": OLD,
        "status": status,
        "settled_reason": None,
        "outbox_state": None,
        "attempt_of": None,
        "resent": False,
    }
    values.update(kw)
    return Aged(**values)  # type: ignore[arg-type]


# ---- durations and cut-offs -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", timedelta(days=90)),
        ("12h", timedelta(hours=12)),
        ("30m", timedelta(minutes=30)),
        (" 7D ", timedelta(days=7)),
        ("1m", timedelta(minutes=1)),
        ("36500d", timedelta(days=36_500)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["-3d", "0d", "0m", "abc", "", "3", "d", "1.5d", "3w", "3 d", "+3d", "36501d", "9" * 12]
)
def test_bad_durations_say_what_is_expected_in_one_line(text: str) -> None:
    with pytest.raises(BadDuration) as info:
        parse_duration(text)
    message = str(info.value)
    assert "\n" not in message
    assert "90d" in message or "zero" in message or "36500d" in message


def test_nonces_and_idempotency_keys_outlive_a_short_purge() -> None:
    cut = cutoffs(NOW, timedelta(hours=1), timedelta(days=400))
    assert cut.messages == NOW - timedelta(hours=1)
    assert cut.replay_guard == NOW - timedelta(days=1)  # never less than a day
    assert cut.stats == NOW - timedelta(days=400)
    long = cutoffs(NOW, timedelta(days=90), timedelta(days=400))
    assert long.replay_guard == long.messages == NOW - timedelta(days=90)


def test_statistics_never_go_before_the_messages() -> None:
    cut = cutoffs(NOW, timedelta(days=500), timedelta(days=400))
    assert cut.stats == cut.messages == NOW - timedelta(days=500)


@pytest.mark.parametrize("grain", [1, 60, 1440])
def test_a_rollup_row_goes_only_when_its_whole_block_is_before_the_cutoff(grain: int) -> None:
    cutoff = datetime(2026, 11, 30, 0, 0, 30, tzinfo=UTC)  # half a minute past midnight
    minute = (cutoff - EPOCH) // timedelta(minutes=1)
    last = last_rollup_minute(cutoff, grain)
    assert last + grain <= minute  # the newest purged block ends at or before the cut-off
    start_of_block = minute // grain * grain
    assert last < start_of_block or grain == 1  # the block holding the cut-off stays
    assert last_rollup_minute(cutoff, 1) == minute - 1


# ---- which messages go -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason", "outbox", "expected"),
    [
        ("delivered", None, None, True),
        ("delivered", None, "done", True),
        ("failed", None, "failed", True),
        ("undelivered", None, "done", True),
        ("rejected", None, None, True),
        ("read", None, None, True),
        ("sent", "no_receipt", "done", True),
        ("sent", None, "done", False),  # may still get a receipt: the sweeper decides
        ("queued", None, "done", False),
        ("accepted", None, "pending", False),
        ("accepted", None, "sending", False),
        ("accepted", None, "reconcile", False),
        ("accepted", None, "reconciling", False),
        ("unknown", None, "unknown", False),
        ("delivered", None, "reconcile", False),  # a send still in progress: never
        ("received", None, None, True),  # an inbound message: nothing more comes for it
    ],
)
def test_settled_for_good(
    status: str, reason: str | None, outbox: str | None, expected: bool
) -> None:
    m = aged(1, status, settled_reason=reason, outbox_state=outbox)
    assert settled_for_good(m) is expected


def test_age_counts_from_the_last_change_too_and_the_cutoff_itself_stays() -> None:
    assert purgeable(aged(1), CUT)
    assert not purgeable(aged(1, updated_at=CUT), CUT)  # a late callback at the cut-off
    assert not purgeable(aged(1, created_at=CUT, updated_at=CUT), CUT)
    assert purgeable(aged(1, created_at=CUT - timedelta(microseconds=1), updated_at=OLD), CUT)


def test_chains_group_every_linked_message() -> None:
    members = {
        1: aged(1, "undelivered", resent=True),
        2: aged(2, "undelivered", attempt_of=1, resent=True),
        3: aged(3, attempt_of=2),
        4: aged(4),
    }
    groups = chains(members)
    assert groups[1] == groups[2] == groups[3] == frozenset({1, 2, 3})
    assert groups[4] == frozenset({4})


def test_a_chain_goes_only_as_a_whole() -> None:
    settled = {
        1: aged(1, "undelivered", resent=True),
        2: aged(2, attempt_of=1),
    }
    assert judge([settled[1]], settled, CUT).delete == {1, 2}
    waiting = {
        1: aged(1, "undelivered", resent=True),
        2: aged(2, "accepted", attempt_of=1, outbox_state="pending"),
    }
    verdict = judge([waiting[1], waiting[2]], waiting, CUT)
    assert verdict.delete == frozenset()
    assert verdict.kept == {1, 2}
    young = {
        1: aged(1, "undelivered", resent=True),
        2: aged(2, attempt_of=1, created_at=NOW, updated_at=NOW),
    }
    assert judge([young[1]], young, CUT).delete == frozenset()


def test_a_chain_not_read_whole_stays() -> None:
    """A resend the repository did not return (or a missing original) keeps the chain."""
    assert judge([aged(1, resent=True)], {1: aged(1, resent=True)}, CUT).delete == frozenset()
    assert judge([aged(2, attempt_of=1)], {2: aged(2, attempt_of=1)}, CUT).delete == frozenset()


def test_protected_messages_stay_with_their_chain() -> None:
    members = {1: aged(1, "failed", resent=True), 2: aged(2, attempt_of=1), 3: aged(3)}
    verdict = judge(list(members.values()), members, CUT, frozenset({2}))
    assert verdict.delete == {3}
    assert verdict.kept == {1, 2}


STATUSES = st.sampled_from(["delivered", "failed", "undelivered", "sent", "queued", "accepted"])


@st.composite
def chained_messages(draw: st.DrawFn) -> dict[int, Aged]:
    """Messages 1..n, each either alone or resending the one before it."""
    n = draw(st.integers(1, 12))
    out: dict[int, Aged] = {}
    for i in range(1, n + 1):
        links = i > 1 and draw(st.booleans())
        young = draw(st.integers(0, 5)) == 0
        at = NOW if young else OLD
        out[i] = aged(
            i,
            draw(STATUSES),
            created_at=at,
            updated_at=at,
            outbox_state=draw(st.sampled_from([None, "done", "failed", "pending"])),
            attempt_of=i - 1 if links else None,
        )
    resent = {m.attempt_of for m in out.values() if m.attempt_of is not None}
    return {i: Aged(**{**_fields(m), "resent": i in resent}) for i, m in out.items()}


def _fields(m: Aged) -> dict[str, object]:
    return {f: getattr(m, f) for f in Aged.__slots__}


@given(chained_messages(), st.data())
def test_judging_never_splits_a_chain_and_deletes_only_purgeable(
    members: dict[int, Aged], data: st.DataObject
) -> None:
    batch = data.draw(st.lists(st.sampled_from(sorted(members)), min_size=1, unique=True))
    verdict = judge([members[i] for i in batch], members, CUT)
    groups = chains(members)
    for i in verdict.delete:
        assert purgeable(members[i], CUT)
        assert groups[i] <= verdict.delete  # whole chains only
    for i in batch:
        everything_ok = all(purgeable(members[j], CUT) for j in groups[i])
        assert (i in verdict.delete) == everything_ok
        assert (i in verdict.kept) != everything_ok


# ---- message text ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason", "outbox", "resends", "needed"),
    [
        ("accepted", None, "pending", False, True),
        ("accepted", None, "sending", False, True),
        ("accepted", None, "reconcile", False, True),
        ("unknown", None, "unknown", False, True),  # an operator may resend it
        ("queued", None, "done", False, False),  # Plivo accepted it; nothing resends it
        ("queued", None, "done", True, True),  # a final failure could still be resent
        ("sent", None, "done", True, True),
        ("delivered", None, "done", True, False),
        ("undelivered", None, "done", True, False),  # any resend copied it already
        ("failed", None, "failed", True, False),  # refused for good
        ("sent", "no_receipt", "done", True, False),
        ("delivered", None, None, True, False),
    ],
)
def test_text_is_kept_only_while_sending_needs_it(
    status: str, reason: str | None, outbox: str | None, resends: bool, needed: bool
) -> None:
    assert Erasure(resends=resends).still_needed(status, reason, outbox) is needed


def test_a_batch_of_messages_holds_about_purge_batch_size_rows() -> None:
    assert messages_per_batch(500) == 83  # guessed: 6 rows a message
    assert messages_per_batch(500, rows=1000, messages=100) == 50  # measured: 10 rows each
    assert messages_per_batch(500, rows=500, messages=500) == 500  # messages alone
    assert messages_per_batch(5, rows=10_000, messages=10) == 1  # never less than one
