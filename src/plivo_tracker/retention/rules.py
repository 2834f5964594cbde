"""Retention rules, pure: durations, cut-offs, which messages may go, when text is erased.

The purge (`purger.py`) and STORE_MESSAGE_TEXT=false both decide here, from rows the
repository read, so the rules can be tested exhaustively without a database. What is kept and
why is in docs/operations.md ("Retention") and docs/adr/0009.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from plivo_tracker.messages.status import TERMINAL

DAY = timedelta(days=1)
# Nonces and idempotency keys guard against a request seen again: Plivo retries a callback for
# minutes and a client retries a send for hours, so neither is ever forgotten sooner than this.
MIN_REPLAY_GUARD = DAY
MAX_AGE = timedelta(days=36_500)  # a cut-off a century back; beyond it datetimes overflow
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_DURATION = re.compile(r"(\d{1,9})([dhm])")
_UNITS = {"d": timedelta(days=1), "h": timedelta(hours=1), "m": timedelta(minutes=1)}


class BadDuration(ValueError):
    """Not a duration the purge takes; the message is one line saying what is expected."""


def parse_duration(text: str) -> timedelta:
    """`90d`, `12h` or `30m` → a positive timedelta (at most a century)."""
    raw = text.strip().lower()
    match = _DURATION.fullmatch(raw)
    if match is None:
        shown = text.strip()[:40]
        raise BadDuration(f"a duration looks like 90d, 12h or 30m (a whole number), not {shown!r}")
    amount = int(match.group(1)) * _UNITS[match.group(2)]
    if amount <= timedelta(0):
        raise BadDuration(f"the duration must be more than zero, not {raw!r}")
    if amount > MAX_AGE:
        raise BadDuration(f"the duration must be at most 36500d, not {raw!r}")
    return amount


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """What is older than these instants goes (strictly older: a row at the instant stays)."""

    messages: datetime  # settled messages and their history; the quarantine
    replay_guard: datetime  # callback nonces and idempotency keys
    stats: datetime  # statistics rollup rows (whole minutes, hours, days before it)


def cutoffs(now: datetime, older_than: timedelta, stats_older_than: timedelta) -> Cutoffs:
    """The cut-offs for a purge of what is `older_than` at `now`. Nonces and idempotency keys
    stay at least MIN_REPLAY_GUARD; the rollups stay at least as long as the messages."""
    return Cutoffs(
        messages=now - older_than,
        replay_guard=now - max(older_than, MIN_REPLAY_GUARD),
        stats=now - max(older_than, stats_older_than),
    )


def last_rollup_minute(cutoff: datetime, grain: int) -> int:
    """The newest `minute` a rollup row of `grain` minutes may have to be purged: its block
    [minute, minute + grain) must end at or before the cut-off's minute (rounded down)."""
    return (cutoff - EPOCH) // timedelta(minutes=1) - grain


# ---- messages ---------------------------------------------------------------------------------

# Rows a message takes with it, guessed before the first batch measured it: the message, an
# outbox row, a send attempt and three status events.
ROWS_PER_MESSAGE_GUESS = 6


def messages_per_batch(batch_rows: int, rows: int = 0, messages: int = 0) -> int:
    """How many messages one transaction may take so that it deletes about `batch_rows` rows
    (PURGE_BATCH_SIZE) in all, from the rows per message of the last batch (`rows` deleted
    with `messages` messages; none yet: a guess). At least one."""
    per_message = rows / messages if messages else ROWS_PER_MESSAGE_GUESS
    return max(1, int(batch_rows / max(1.0, per_message)))


FINAL = frozenset(s.value for s in TERMINAL)
# Outbox states after which the dispatcher never touches a message again; anything else
# (pending, sending, reconcile, reconciling, unknown) is a send still in progress.
OUTBOX_SETTLED = frozenset({"done", "failed"})


@dataclass(frozen=True, slots=True)
class Aged:
    """What the purge rule reads of one message."""

    id: int
    created_at: datetime
    updated_at: datetime
    status: str
    settled_reason: str | None
    outbox_state: str | None  # None: no outbox row (a message known only from callbacks)
    attempt_of: int | None  # the message this one resends
    resent: bool = False  # another message resends this one


def settled_for_good(m: Aged) -> bool:
    """Nothing more will happen to it on our side: a final status (or "sent, no receipt", or
    an inbound message: "received"), and no send of it in progress. `queued`, `sent`,
    `accepted` and `unknown` never qualify."""
    settled = (
        m.status in FINAL
        or m.status == "received"
        or (m.status == "sent" and m.settled_reason == "no_receipt")
    )
    return settled and (m.outbox_state is None or m.outbox_state in OUTBOX_SETTLED)


def purgeable(m: Aged, cutoff: datetime) -> bool:
    """Old (created and last changed before the cut-off) and settled for good."""
    return m.created_at < cutoff and m.updated_at < cutoff and settled_for_good(m)


def chains(members: Mapping[int, Aged]) -> dict[int, frozenset[int]]:
    """Each message's resend chain (the messages linked to it through `attempt_of`), by id."""
    parent: dict[int, int] = {i: i for i in members}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for m in members.values():
        if m.attempt_of is not None and m.attempt_of in members:
            parent[root(m.id)] = root(m.attempt_of)
    groups: dict[int, set[int]] = {}
    for i in members:
        groups.setdefault(root(i), set()).add(i)
    return {i: frozenset(groups[root(i)]) for i in members}


def chain_complete(chain: Iterable[Aged], members: Mapping[int, Aged]) -> bool:
    """Every link of the chain was read: nothing it points at, or that points at it, is
    missing (a chain is only ever judged whole)."""
    return all(
        (m.attempt_of is None or m.attempt_of in members)
        and (not m.resent or _has_child(m, members))
        for m in chain
    )


def _has_child(m: Aged, members: Mapping[int, Aged]) -> bool:
    return any(o.attempt_of == m.id for o in members.values())


@dataclass(frozen=True, slots=True)
class Verdict:
    delete: frozenset[int]
    kept: frozenset[int]  # old messages of the batch that stay (not settled, or chained)


def judge(
    batch: Iterable[Aged],
    members: Mapping[int, Aged],
    cutoff: datetime,
    protected: frozenset[int] = frozenset(),
) -> Verdict:
    """Which messages go: a message alone when it is purgeable; a resend chain only as a whole,
    when every one of its messages is (a resend waiting for its turn keeps its original, and a
    chain never loses its head, which would reset the resend count). `members` holds the batch
    and every message chained to it. `protected` ids always stay (with their chains)."""
    groups = chains(members)
    delete: set[int] = set()
    kept: set[int] = set()
    for m in batch:
        group = groups.get(m.id, frozenset({m.id}))
        chain = [members.get(i, m) for i in group]
        ok = (
            all(purgeable(c, cutoff) for c in chain)
            and chain_complete(chain, members)
            and not group & protected
        )
        (delete if ok else kept).update(group if ok else {m.id})
    return Verdict(frozenset(delete), frozenset(kept - delete))


# ---- message text (STORE_MESSAGE_TEXT=false) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Erasure:
    """STORE_MESSAGE_TEXT=false: a message's text and media URLs are erased in the transaction
    that makes them unnecessary. `resends`: a final failure may still be resent
    (RESEND_ERROR_CODES), and the resend needs the text, so it stays until the status is final."""

    resends: bool

    def still_needed(
        self, status: str, settled_reason: str | None, outbox_state: str | None
    ) -> bool:
        """Does sending still need this message's content?"""
        if outbox_state is not None and outbox_state not in OUTBOX_SETTLED:
            return True  # queued, in flight, being reconciled, or `unknown` (an operator resends)
        if outbox_state == "failed" or status in FINAL or settled_reason is not None:
            return False
        # Accepted by Plivo: only a resend after a final failure could still need it.
        return self.resends
