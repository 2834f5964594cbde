"""The status machine, pure: which callback may change a message's status, and multipart roll-up.

Rules (plivo-protocol.md §2.3): rank never decreases, so a late `queued`/`sent` goes into the
history only; terminal statuses never revert; a second, different terminal status is a conflict
that is kept and flagged: an event with a `Sequence` beats one without, the higher `Sequence`
wins, then the later Plivo timestamp; when nothing orders them the first one stays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class MessageStatus(StrEnum):
    ACCEPTED = "accepted"  # local: stored in the outbox, not yet acknowledged by Plivo
    # local: a send whose outcome no lookup could decide; an operator adopts a UUID or resends
    UNKNOWN = "unknown"
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    REJECTED = "rejected"  # legacy; treated like undelivered
    READ = "read"  # WhatsApp only
    RECEIVED = "received"  # inbound MDRs


RANK: dict[MessageStatus, int] = {
    MessageStatus.ACCEPTED: -1,
    MessageStatus.UNKNOWN: -1,
    MessageStatus.QUEUED: 0,
    MessageStatus.RECEIVED: 0,
    MessageStatus.SENT: 1,
    MessageStatus.DELIVERED: 2,
    MessageStatus.UNDELIVERED: 2,
    MessageStatus.FAILED: 2,
    MessageStatus.REJECTED: 2,
    MessageStatus.READ: 3,
}
TERMINAL = frozenset(
    {
        MessageStatus.DELIVERED,
        MessageStatus.UNDELIVERED,
        MessageStatus.FAILED,
        MessageStatus.REJECTED,
        MessageStatus.READ,
    }
)
FAILURES = frozenset({MessageStatus.UNDELIVERED, MessageStatus.FAILED, MessageStatus.REJECTED})
# Statuses a Plivo callback may carry (everything but our local ones).
PLIVO_STATUSES = frozenset(MessageStatus) - {MessageStatus.ACCEPTED, MessageStatus.UNKNOWN}


class Effect(StrEnum):
    """What an event did to its message; stored on the event for the timeline."""

    APPLIED = "applied"  # moved the status forward
    SAME = "same"  # same status again (e.g. a second `sent`): nothing to change
    STALE = "stale"  # lower rank than the current status: history only
    CONFLICT_WON = "conflict_won"  # a different terminal status that replaced the current one
    CONFLICT_KEPT = "conflict_kept"  # a different terminal status that lost: history only
    DUPLICATE = "duplicate"  # same dedupe key seen before (never stored twice)


@dataclass(frozen=True, slots=True)
class State:
    """The part of a message the machine looks at; also used for one incoming event."""

    status: MessageStatus
    sequence: int | None = None
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    effect: Effect
    status: MessageStatus  # the message's status after the event

    @property
    def changed(self) -> bool:
        return self.effect in (Effect.APPLIED, Effect.CONFLICT_WON)

    @property
    def conflict(self) -> bool:
        return self.effect in (Effect.CONFLICT_WON, Effect.CONFLICT_KEPT)


def decide(current: State | None, incoming: State) -> Decision:
    """Decide what `incoming` does to a message whose status is `current` (None: no status yet)."""
    if current is None:
        return Decision(Effect.APPLIED, incoming.status)
    cur, new = current.status, incoming.status
    if new == cur:
        return Decision(Effect.SAME, cur)
    if cur in TERMINAL and new in TERMINAL and RANK[new] == RANK[cur]:
        return _terminal_conflict(current, incoming)
    if RANK[new] > RANK[cur]:
        return Decision(Effect.APPLIED, new)
    return Decision(Effect.STALE, cur)


def decide_local(
    current: MessageStatus | None,
    target: MessageStatus,
    allowed_from: frozenset[MessageStatus] | None,
) -> Decision:
    """Decide what a change of our own does: a message's birth (`current` None), a send that
    Plivo accepted or refused, a lookup that gave up, an operator's resend.

    Ours only ever move a message on from the local statuses listed in `allowed_from`, never
    over what Plivo told us: a 202 recorded after a fast callback's `delivered` is history only.
    Local statuses share one rank, so these moves cannot be ranked like callbacks."""
    if current is None:
        return Decision(Effect.APPLIED, target)
    if current == target:
        return Decision(Effect.SAME, current)
    if allowed_from is not None and current in allowed_from:
        return Decision(Effect.APPLIED, target)
    return Decision(Effect.STALE, current)


def _conflict_key(state: State) -> tuple[int, float]:
    """Total order for competing terminal statuses: any Sequence beats none (callbacks carry
    one, polls do not), then the higher Sequence, then the later Plivo timestamp.

    A key rather than pairwise rules keeps the order transitive, so the winner never depends on
    the order in which conflicting events arrive.
    """
    if state.sequence is not None:
        return (1, float(state.sequence))
    if state.at is not None:
        return (0, state.at.timestamp())
    return (0, float("-inf"))


def _terminal_conflict(current: State, incoming: State) -> Decision:
    # Equal keys (e.g. neither has a Sequence or a time): the first terminal status stays.
    if _conflict_key(incoming) > _conflict_key(current):
        return Decision(Effect.CONFLICT_WON, incoming.status)
    return Decision(Effect.CONFLICT_KEPT, current.status)


def rollup(
    current: MessageStatus | None,
    parts: Sequence[MessageStatus],
    expected_parts: int | None,
) -> MessageStatus | None:
    """The parent status of a multipart message from its parts' statuses.

    A failed or undelivered part is never hidden by delivered ones: any failure makes the parent
    that failure. The parent is delivered only when every expected part is delivered. Otherwise
    it follows the least advanced part, capped at `sent` while parts are still missing, and never
    moves backwards (a newly seen `queued` part does not pull a `sent` parent back).
    """
    if not parts:
        return current
    failures = [p for p in parts if p in FAILURES]
    if failures:
        return failures[0]
    total = max(expected_parts or 0, len(parts))
    if len(parts) >= total and all(
        p in (MessageStatus.DELIVERED, MessageStatus.READ) for p in parts
    ):
        derived = MessageStatus.DELIVERED
    else:
        derived = min(parts, key=lambda p: RANK[p])
        if RANK[derived] > RANK[MessageStatus.SENT]:
            derived = MessageStatus.SENT
    if current is None:
        return derived
    if current in FAILURES:
        # Sticky: even if a part's failure was later overturned by a conflicting callback, the
        # parent keeps showing it (and has_conflict is set) rather than hiding it.
        return current
    return derived if RANK[derived] > RANK[current] else current


def parse_part_info(part_info: str | None) -> tuple[int, int] | None:
    """`"1 of 2"` → (1, 2); anything else (current Plivo: "reserved") → None."""
    if not part_info:
        return None
    bits = part_info.lower().split(" of ")
    if len(bits) != 2:
        return None
    try:
        index, total = int(bits[0]), int(bits[1])
    except ValueError:
        return None
    if index < 1 or total < 1 or index > total:
        return None
    return index, total
