"""Tests for plivo_tracker.messages.status, the pure status machine (plivo-protocol.md §2.3-5)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from plivo_tracker.messages.status import (
    FAILURES,
    PLIVO_STATUSES,
    RANK,
    TERMINAL,
    Decision,
    Effect,
    MessageStatus,
    State,
    decide,
    decide_local,
    parse_part_info,
    rollup,
)

S = MessageStatus
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
NON_TERMINAL = sorted(set(MessageStatus) - TERMINAL)
TERMINAL_SORTED = sorted(TERMINAL)
SAME_RANK_TERMINAL_PAIRS = [
    (a, b) for a in TERMINAL_SORTED for b in TERMINAL_SORTED if a != b and RANK[a] == RANK[b]
]


def fold(events: list[State]) -> tuple[State | None, list[Decision]]:
    """Apply events in order the way ingest does: the stored State changes only on a change."""
    current: State | None = None
    decisions: list[Decision] = []
    for event in events:
        decision = decide(current, event)
        decisions.append(decision)
        if decision.changed:
            current = event
        else:
            assert current is not None
            assert decision.status == current.status
    return current, decisions


# --- example tests: one per rule -------------------------------------------------------------


def test_first_event_applies() -> None:
    assert decide(None, State(S.SENT, 2)) == Decision(Effect.APPLIED, S.SENT)


def test_forward_progress_applies() -> None:
    assert decide(State(S.QUEUED, 1), State(S.SENT, 2)) == Decision(Effect.APPLIED, S.SENT)
    assert decide(State(S.SENT, 2), State(S.DELIVERED, 3)) == Decision(Effect.APPLIED, S.DELIVERED)


@pytest.mark.parametrize("late", [S.SENT, S.QUEUED])
def test_late_sent_or_queued_after_delivered_is_stale(late: MessageStatus) -> None:
    decision = decide(State(S.DELIVERED, 3), State(late, 2))
    assert decision == Decision(Effect.STALE, S.DELIVERED)
    assert not decision.changed
    assert not decision.conflict


def test_late_sent_with_higher_sequence_is_still_stale() -> None:
    # Rank beats Sequence: a lower-rank status never moves a message backwards.
    assert decide(State(S.DELIVERED, 3), State(S.SENT, 9)) == Decision(Effect.STALE, S.DELIVERED)


def test_queued_after_sent_is_stale() -> None:
    assert decide(State(S.SENT, 2), State(S.QUEUED, 1)) == Decision(Effect.STALE, S.SENT)


@pytest.mark.parametrize("terminal", TERMINAL_SORTED)
@pytest.mark.parametrize("incoming", NON_TERMINAL)
def test_terminal_never_reverts(terminal: MessageStatus, incoming: MessageStatus) -> None:
    decision = decide(State(terminal, 1, T0), State(incoming, 100, T0 + timedelta(hours=1)))
    assert decision.effect == Effect.STALE
    assert decision.status == terminal


def test_different_terminal_higher_sequence_wins() -> None:
    decision = decide(State(S.DELIVERED, 3), State(S.UNDELIVERED, 4))
    assert decision == Decision(Effect.CONFLICT_WON, S.UNDELIVERED)
    assert decision.changed
    assert decision.conflict


def test_different_terminal_lower_sequence_loses() -> None:
    decision = decide(State(S.UNDELIVERED, 4), State(S.DELIVERED, 3))
    assert decision == Decision(Effect.CONFLICT_KEPT, S.UNDELIVERED)
    assert not decision.changed
    assert decision.conflict


def test_different_terminal_equal_sequence_keeps_first() -> None:
    assert decide(State(S.DELIVERED, 3), State(S.FAILED, 3)) == Decision(
        Effect.CONFLICT_KEPT, S.DELIVERED
    )


def test_sequence_beats_timestamps_when_both_have_one() -> None:
    # Higher Sequence but an earlier timestamp: Sequence decides.
    current = State(S.DELIVERED, 3, T0 + timedelta(minutes=5))
    assert decide(current, State(S.UNDELIVERED, 4, T0)) == Decision(
        Effect.CONFLICT_WON, S.UNDELIVERED
    )


def test_no_sequences_later_timestamp_wins() -> None:
    current = State(S.DELIVERED, None, T0)
    later = State(S.UNDELIVERED, None, T0 + timedelta(seconds=1))
    assert decide(current, later) == Decision(Effect.CONFLICT_WON, S.UNDELIVERED)


def test_no_sequences_earlier_timestamp_loses() -> None:
    current = State(S.DELIVERED, None, T0)
    earlier = State(S.UNDELIVERED, None, T0 - timedelta(seconds=1))
    assert decide(current, earlier) == Decision(Effect.CONFLICT_KEPT, S.DELIVERED)


def test_a_sequence_beats_no_sequence() -> None:
    # Callbacks carry a Sequence, polls do not: the one with a Sequence wins, whatever the times.
    current = State(S.DELIVERED, 3, T0)
    assert decide(current, State(S.FAILED, None, T0 + timedelta(seconds=1))) == Decision(
        Effect.CONFLICT_KEPT, S.DELIVERED
    )
    unsequenced = State(S.DELIVERED, None, T0 + timedelta(seconds=5))
    assert decide(unsequenced, State(S.UNDELIVERED, 7, T0)) == Decision(
        Effect.CONFLICT_WON, S.UNDELIVERED
    )


TERMINAL_STATES = st.builds(
    State,
    st.sampled_from([S.DELIVERED, S.UNDELIVERED, S.FAILED, S.REJECTED]),
    st.none() | st.integers(min_value=0, max_value=5),
    st.none() | st.integers(min_value=0, max_value=5).map(lambda n: T0 + timedelta(seconds=n)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(TERMINAL_STATES, min_size=2, max_size=4, unique_by=lambda s: s.status))
def test_conflict_winner_does_not_depend_on_arrival_order(events: list[State]) -> None:
    """Competing terminal statuses with distinct orderings: every arrival order ends the same."""
    # Distinct by what orders them (a Sequence if any, else the time): ties keep the first.
    keys = [(1, e.sequence) if e.sequence is not None else (0, e.at) for e in events]
    assume(len(set(keys)) == len(keys))

    def fold(order: list[State]) -> MessageStatus:
        current: State | None = None
        for e in order:
            d = decide(current, e)
            if d.changed:
                current = e
        assert current is not None
        return current.status

    assert len({fold(list(p)) for p in itertools.permutations(events)}) == 1


@pytest.mark.parametrize(
    ("current", "incoming"),
    [
        (State(S.DELIVERED), State(S.UNDELIVERED)),
        (State(S.DELIVERED, 3), State(S.UNDELIVERED, None)),
        (State(S.DELIVERED, None, T0), State(S.UNDELIVERED, None, None)),
        (State(S.DELIVERED, 4, T0), State(S.UNDELIVERED, 4, T0)),
    ],
)
def test_no_order_known_first_terminal_stays(current: State, incoming: State) -> None:
    assert decide(current, incoming) == Decision(Effect.CONFLICT_KEPT, S.DELIVERED)


@pytest.mark.parametrize(("current", "incoming"), SAME_RANK_TERMINAL_PAIRS)
def test_every_terminal_pair_conflicts(current: MessageStatus, incoming: MessageStatus) -> None:
    assert decide(State(current, 1), State(incoming, 2)).effect == Effect.CONFLICT_WON
    assert decide(State(current, 2), State(incoming, 1)).effect == Effect.CONFLICT_KEPT


@pytest.mark.parametrize("status", sorted(MessageStatus))
def test_same_status_is_same(status: MessageStatus) -> None:
    decision = decide(State(status, 1, T0), State(status, 5, T0 + timedelta(seconds=1)))
    assert decision == Decision(Effect.SAME, status)
    assert not decision.changed
    assert not decision.conflict


@pytest.mark.parametrize("incoming", [S.QUEUED, S.SENT, S.DELIVERED, S.FAILED])
def test_local_accepted_moves_forward(incoming: MessageStatus) -> None:
    assert decide(State(S.ACCEPTED), State(incoming, 1)) == Decision(Effect.APPLIED, incoming)


def test_read_after_delivered_applies() -> None:
    assert decide(State(S.DELIVERED, 3), State(S.READ, 4)) == Decision(Effect.APPLIED, S.READ)


def test_read_applies_even_with_lower_sequence() -> None:
    assert decide(State(S.DELIVERED, 3), State(S.READ, 1)) == Decision(Effect.APPLIED, S.READ)


def test_delivered_after_read_is_stale() -> None:
    assert decide(State(S.READ, 4), State(S.DELIVERED, 3)) == Decision(Effect.STALE, S.READ)


def test_inbound_received_then_delivered_applies() -> None:
    assert decide(State(S.RECEIVED), State(S.DELIVERED)) == Decision(Effect.APPLIED, S.DELIVERED)


def test_constants_match_protocol_table() -> None:
    assert {s for s in MessageStatus if RANK[s] == 2} == {
        S.DELIVERED,
        S.UNDELIVERED,
        S.FAILED,
        S.REJECTED,
    }
    assert RANK[S.ACCEPTED] < RANK[S.QUEUED] < RANK[S.SENT] < RANK[S.DELIVERED] < RANK[S.READ]
    assert S.SENT not in TERMINAL
    assert FAILURES == {S.UNDELIVERED, S.FAILED, S.REJECTED}
    assert S.ACCEPTED not in PLIVO_STATUSES
    # Our own statuses: stored in the outbox, and a send whose outcome no lookup could decide.
    assert set(MessageStatus) - PLIVO_STATUSES == {S.ACCEPTED, S.UNKNOWN}
    assert RANK[S.UNKNOWN] == RANK[S.ACCEPTED]  # anything Plivo says moves it forward


# --- property tests: decide ------------------------------------------------------------------

statuses = st.sampled_from(sorted(MessageStatus))
sequences = st.none() | st.integers(min_value=0, max_value=50)
times = st.none() | st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC)
)
states = st.builds(State, statuses, sequences, times)


@settings(max_examples=300, deadline=None)
@given(st.lists(states, min_size=1, max_size=30))
def test_property_rank_never_decreases_and_terminal_stays(events: list[State]) -> None:
    current: State | None = None
    for event in events:
        decision = decide(current, event)
        if current is not None:
            assert RANK[decision.status] >= RANK[current.status], (current, event, decision)
            if current.status in TERMINAL:
                assert decision.status in TERMINAL, (current, event, decision)
        # The decision's status is either the old status or the incoming one.
        assert decision.status in {event.status} | ({current.status} if current else set())
        assert decision.changed == (current is None or decision.status != current.status)
        if decision.changed:
            current = event


def _lifecycle(*chain: MessageStatus) -> list[State]:
    return [State(s, i + 1, T0 + timedelta(seconds=10 * i)) for i, s in enumerate(chain)]


LIFECYCLES = [
    _lifecycle(S.QUEUED, S.SENT, S.DELIVERED),
    _lifecycle(S.QUEUED, S.SENT, S.UNDELIVERED),
    _lifecycle(S.QUEUED, S.FAILED),
    _lifecycle(S.QUEUED, S.SENT),  # no DLR (US/CA): `sent` is the last status
    _lifecycle(S.QUEUED, S.SENT, S.DELIVERED, S.READ),
    _lifecycle(S.QUEUED, S.SENT, S.REJECTED),
    _lifecycle(S.RECEIVED, S.DELIVERED),
    _lifecycle(S.RECEIVED, S.UNDELIVERED),
    # A carrier correcting itself: the later (higher Sequence) terminal status wins.
    _lifecycle(S.QUEUED, S.SENT, S.UNDELIVERED, S.DELIVERED),
]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_property_shuffled_lifecycle_with_duplicates_ends_in_final_status(
    data: st.DataObject,
) -> None:
    lifecycle = data.draw(st.sampled_from(LIFECYCLES), label="lifecycle")
    duplicates = data.draw(st.lists(st.sampled_from(lifecycle), max_size=10), label="duplicates")
    arrival = data.draw(st.permutations(lifecycle + duplicates), label="arrival")
    final, decisions = fold(arrival)
    assert final is not None
    assert final.status == lifecycle[-1].status
    assert decisions[-1].status == lifecycle[-1].status


@st.composite
def consistent_events(draw: st.DrawFn) -> list[State]:
    """An arrival order of callbacks, each status being one event that may be retried.

    Either every event carries a (distinct) Sequence or none does, as with real Plivo callbacks.
    """
    kinds = draw(st.lists(statuses, min_size=1, max_size=len(MessageStatus), unique=True))
    if draw(st.booleans(), label="with_sequence"):
        seqs: list[int | None] = list(
            draw(
                st.lists(st.integers(0, 100), min_size=len(kinds), max_size=len(kinds), unique=True)
            )
        )
    else:
        seqs = [None] * len(kinds)
    ats = draw(st.lists(times, min_size=len(kinds), max_size=len(kinds)))
    pool = [State(k, q, a) for k, q, a in zip(kinds, seqs, ats, strict=True)]
    return draw(st.lists(st.sampled_from(pool), min_size=1, max_size=40))


@settings(max_examples=300, deadline=None)
@given(consistent_events())
def test_property_changes_at_most_distinct_statuses(events: list[State]) -> None:
    _, decisions = fold(events)
    changes = sum(d.changed for d in decisions)
    assert changes <= len({e.status for e in events})


# --- rollup ----------------------------------------------------------------------------------


def test_rollup_no_parts_keeps_current() -> None:
    assert rollup(None, [], 2) is None
    assert rollup(S.SENT, [], 2) == S.SENT


def test_rollup_failure_is_never_hidden() -> None:
    assert rollup(S.SENT, [S.DELIVERED, S.UNDELIVERED], 2) == S.UNDELIVERED
    assert rollup(None, [S.FAILED, S.DELIVERED, S.DELIVERED], 3) == S.FAILED


def test_rollup_delivered_only_when_all_expected_parts_delivered() -> None:
    assert rollup(S.SENT, [S.DELIVERED], 2) == S.SENT
    assert rollup(S.SENT, [S.DELIVERED, S.DELIVERED], 3) == S.SENT
    assert rollup(S.SENT, [S.DELIVERED, S.DELIVERED], 2) == S.DELIVERED
    assert rollup(None, [S.DELIVERED, S.DELIVERED], None) == S.DELIVERED


def test_rollup_follows_least_advanced_part() -> None:
    assert rollup(None, [S.QUEUED, S.DELIVERED], 2) == S.QUEUED
    assert rollup(S.ACCEPTED, [S.SENT, S.DELIVERED], 2) == S.SENT


def test_rollup_never_moves_backwards() -> None:
    assert rollup(S.SENT, [S.QUEUED, S.DELIVERED], 2) == S.SENT
    assert rollup(S.DELIVERED, [S.DELIVERED, S.DELIVERED, S.QUEUED], None) == S.DELIVERED


def test_rollup_failed_parent_stays_failed() -> None:
    assert rollup(S.FAILED, [S.DELIVERED, S.DELIVERED], 2) == S.FAILED


part_statuses = st.sampled_from(sorted(PLIVO_STATUSES))


@settings(max_examples=300, deadline=None)
@given(
    current=st.none() | statuses,
    parts=st.lists(part_statuses, max_size=6),
    expected=st.none() | st.integers(min_value=1, max_value=6),
)
def test_property_rollup(
    current: MessageStatus | None, parts: list[MessageStatus], expected: int | None
) -> None:
    result = rollup(current, parts, expected)
    if any(p in FAILURES for p in parts):
        assert result in FAILURES
    if result == S.DELIVERED and current != S.DELIVERED:
        assert len(parts) >= (expected or 0)
        assert all(p in (S.DELIVERED, S.READ) for p in parts)
    if current is not None:
        assert result is not None
        if result not in FAILURES:
            assert RANK[result] >= RANK[current]
    elif not parts:
        assert result is None


# --- parse_part_info -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1 of 2", (1, 2)),
        ("2 of 2", (2, 2)),
        ("1 OF 3", (1, 3)),
        ("reserved", None),
        ("", None),
        (None, None),
        ("3 of 2", None),
        ("0 of 1", None),
        ("1 of 0", None),
        ("x of y", None),
        ("1 of 2 of 3", None),
        ("1/2", None),
    ],
)
def test_parse_part_info(value: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_part_info(value) == expected


# ---- our own changes (decide_local) ---------------------------------------------------------

LOCAL = frozenset({MessageStatus.ACCEPTED, MessageStatus.UNKNOWN})
PLIVO_SAID = sorted(PLIVO_STATUSES)


@given(st.sampled_from(sorted(MessageStatus)))
def test_a_birth_is_applied(target: MessageStatus) -> None:
    assert decide_local(None, target, None) == Decision(Effect.APPLIED, target)


@given(
    st.sampled_from(PLIVO_SAID),
    st.sampled_from(sorted(MessageStatus)),
    st.frozensets(st.sampled_from(sorted(LOCAL))),
)
def test_our_change_never_overrides_what_plivo_said(
    current: MessageStatus, target: MessageStatus, allowed: frozenset[MessageStatus]
) -> None:
    """Our changes only move on from local statuses: over a status Plivo reported, a change of
    ours is history only, whatever it is."""
    decision = decide_local(current, target, allowed)
    assert decision.status == current
    assert not decision.changed


@given(
    st.sampled_from(sorted(MessageStatus)),
    st.sampled_from(sorted(MessageStatus)),
    st.frozensets(st.sampled_from(sorted(MessageStatus))),
)
def test_our_change_applies_exactly_from_what_it_allows(
    current: MessageStatus, target: MessageStatus, allowed: frozenset[MessageStatus]
) -> None:
    decision = decide_local(current, target, allowed)
    if current == target:
        assert decision == Decision(Effect.SAME, current)
    elif current in allowed:
        assert decision == Decision(Effect.APPLIED, target)
    else:
        assert decision == Decision(Effect.STALE, current)


def test_a_late_202_after_a_fast_delivered_is_history_only() -> None:
    decision = decide_local(MessageStatus.DELIVERED, MessageStatus.QUEUED, LOCAL)
    assert decision == Decision(Effect.STALE, MessageStatus.DELIVERED)
