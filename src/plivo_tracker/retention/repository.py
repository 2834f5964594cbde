"""All SQL of the retention purge and of erasing message text: find old rows, delete or count
them by key, a batch at a time.

Synchronous functions on the database writer (see db/engine.py), each called inside one short
write transaction that the caller (retention/purger.py) opens and commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Connection, Table, delete, exists, func, or_, select, update

from plivo_tracker.db.dialect import skip_locked
from plivo_tracker.inbound.repository import cursor_position
from plivo_tracker.messages.models import (
    callback_nonces,
    idempotency_keys,
    journal,
    message_parts,
    messages,
    outbox,
    quarantine,
    send_attempts,
    stats_carriers,
    stats_errors,
    stats_latency,
    stats_status,
    status_events,
)
from plivo_tracker.retention.rules import Aged

# What a message takes with it, deleted before it (they point at it).
MESSAGE_CHILDREN: tuple[Table, ...] = (status_events, message_parts, send_attempts, outbox)
ROLLUPS: tuple[Table, ...] = (stats_status, stats_errors, stats_carriers, stats_latency)
GRAINS = (1, 60, 1440)
Cursor = tuple[datetime, int]  # (created_at, id) of the last message read


def _aged_columns() -> list[Any]:
    m = messages.c
    resent = exists().where(messages.alias("r").c.attempt_of == m.id)
    return [
        m.id,
        m.created_at,
        m.updated_at,
        m.status,
        m.settled_reason,
        outbox.c.state,
        m.attempt_of,
        resent.label("resent"),
    ]


def _aged(rows: Iterable[Any]) -> list[Aged]:
    return [
        Aged(
            id=int(r.id),
            created_at=r.created_at,
            updated_at=r.updated_at,
            status=r.status,
            settled_reason=r.settled_reason,
            outbox_state=r.state,
            attempt_of=None if r.attempt_of is None else int(r.attempt_of),
            resent=bool(r.resent),
        )
        for r in rows
    ]


def old_messages(
    conn: Connection, cutoff: datetime, after: Cursor | None, limit: int, lock: bool = False
) -> list[Aged]:
    """Up to `limit` messages created before `cutoff`, in (created_at, id) order after `after`:
    an index range on created_at, whatever their status (the rule decides, and counts the rest).

    `lock`: row-locked for this transaction, skipping those another transaction is changing
    right now (PostgreSQL): the purge never waits for a writer, so it cannot deadlock with one,
    and a message in the middle of a change is simply left for the next pass."""
    m = messages.c
    stmt = (
        select(*_aged_columns())
        .select_from(messages.outerjoin(outbox, outbox.c.message_id == m.id))
        .where(m.created_at < cutoff, m.origin != "claim")
        .order_by(m.created_at, m.id)
        .limit(limit)
    )
    if after is not None:
        # The plain lower bound keeps it one index range read in order, LIMIT rows long; an OR
        # of the two cases alone made SQLite read the whole rest of the range and sort it.
        at, last = after
        stmt = stmt.where(m.created_at >= at, or_(m.created_at > at, m.id > last))
    return _aged(conn.execute(skip_locked(conn.dialect, stmt, of=messages) if lock else stmt))


def chained(
    conn: Connection, batch: Sequence[Aged], lock: bool = False, rounds: int = 20
) -> dict[int, Aged]:
    """The batch and every message linked to it through `attempt_of`, either way (a resend
    chain holds at most RESEND_MAX_ATTEMPTS ≤ 10 messages). `lock`: as in `old_messages`; a
    link skipped because it is being changed leaves its chain incomplete, so it stays."""
    found = {m.id: m for m in batch}
    todo = [m for m in batch if m.attempt_of is not None or m.resent]
    m = messages.c
    for _ in range(rounds):
        if not todo:
            break
        ids = [t.id for t in todo]
        parents = [t.attempt_of for t in todo if t.attempt_of is not None]
        stmt = (
            select(*_aged_columns())
            .select_from(messages.outerjoin(outbox, outbox.c.message_id == m.id))
            .where(or_(m.attempt_of.in_(ids), m.id.in_(parents)))
            .order_by(m.id)
        )
        if lock:
            stmt = skip_locked(conn.dialect, stmt, of=messages)
        new = [a for a in _aged(conn.execute(stmt)) if a.id not in found]
        found.update((a.id, a) for a in new)
        todo = new
    return found


def newest_ids(conn: Connection) -> frozenset[int]:
    """The newest message and the message of the newest event. SQLite (no AUTOINCREMENT) would
    give a deleted highest id to the next row, and a client holding that message id or event
    cursor would meet a stranger; keeping these two rows keeps every id ever handed out unique."""
    newest = conn.execute(select(func.max(messages.c.id))).scalar()
    top_event = select(func.max(status_events.c.id)).scalar_subquery()
    of_event = conn.execute(
        select(status_events.c.message_id).where(status_events.c.id == top_event)
    ).scalar()
    return frozenset(int(i) for i in (newest, of_event) if i is not None)


def count_messages(conn: Connection, ids: Sequence[int]) -> dict[str, int]:
    """What deleting these messages would delete, per table (a dry run)."""
    if not ids:
        return {}
    out = {"messages": len(ids)}
    for table in MESSAGE_CHILDREN:
        stmt = select(func.count()).select_from(table).where(table.c.message_id.in_(ids))
        out[table.name] = int(conn.execute(stmt).scalar_one())
    return out


def delete_messages(conn: Connection, ids: Sequence[int]) -> dict[str, int]:
    """Delete these messages and everything that points at them; returns the rows per table.

    The statistics rollups keep counting them: only the projector changes the rollups
    (messages/rollups.py), and a purge is no status change."""
    if not ids:
        return {}
    out: dict[str, int] = {}
    for table in MESSAGE_CHILDREN:
        out[table.name] = conn.execute(delete(table).where(table.c.message_id.in_(ids))).rowcount
    out["messages"] = conn.execute(delete(messages).where(messages.c.id.in_(ids))).rowcount
    return out


# ---- tables with a key and a time: quarantine, idempotency keys, nonces -----------------------

# table → (its key, the time it is aged by)
AGED_BY: dict[str, tuple[Column[Any], Column[Any]]] = {
    quarantine.name: (quarantine.c.id, quarantine.c.received_at),
    idempotency_keys.name: (idempotency_keys.c.key, idempotency_keys.c.created_at),
    callback_nonces.name: (callback_nonces.c.nonce, callback_nonces.c.received_at),
    journal.name: (journal.c.id, journal.c.received_at),
}


def _older(table: str, cutoff: datetime) -> Any:
    """The rows of `table` aged out by `cutoff`; a journal row only once it is applied (below
    the projector's cursor): an acknowledged report is never purged before its effect. The row
    at the cursor stays: SQLite draws a new rowid above the largest one left, so ids never
    restart below the cursor."""
    key, at = AGED_BY[table]
    cond = at < cutoff
    if table == journal.name:
        cond = cond & (journal.c.id < cursor_position().scalar_subquery())
    return cond


def old_keys(conn: Connection, table: str, cutoff: datetime, limit: int) -> list[Any]:
    """Keys of up to `limit` of the table's oldest rows from before `cutoff` (an index range)."""
    key, at = AGED_BY[table]
    stmt = select(key).where(_older(table, cutoff)).order_by(at, key).limit(limit)
    return list(conn.execute(stmt).scalars())


def delete_keys(conn: Connection, table: str, keys: Sequence[Any]) -> int:
    key, _ = AGED_BY[table]
    if not keys:
        return 0
    return int(conn.execute(delete(key.table).where(key.in_(keys))).rowcount)


def count_older(conn: Connection, table: str, cutoff: datetime) -> int:
    key, _ = AGED_BY[table]
    stmt = select(func.count()).select_from(key.table).where(_older(table, cutoff))
    return int(conn.execute(stmt).scalar_one())


# ---- statistics rollups ---------------------------------------------------------------------


def rollup_bound(conn: Connection, table: Table, grain: int, last: int, limit: int) -> int | None:
    """The `minute` below which a batch of about `limit` rows of `grain` ends (rows at or
    before `last`); None when fewer than `limit` rows are left (the batch takes them all)."""
    t = table.c
    stmt = (
        select(t.minute)
        .where(t.grain == grain, t.minute <= last)
        .order_by(t.minute)
        .offset(limit - 1)
        .limit(1)
    )
    found = conn.execute(stmt).scalar()
    return None if found is None else int(found)


def delete_rollups(conn: Connection, table: Table, grain: int, last: int) -> int:
    """Delete the rows of `grain` whose block starts at or before minute `last` (a primary key
    range: every row of one minute goes together)."""
    t = table.c
    return int(conn.execute(delete(table).where(t.grain == grain, t.minute <= last)).rowcount)


def count_rollups(conn: Connection, table: Table, grain: int, last: int) -> int:
    t = table.c
    stmt = select(func.count()).select_from(table).where(t.grain == grain, t.minute <= last)
    return int(conn.execute(stmt).scalar_one())


# ---- message text (STORE_MESSAGE_TEXT=false) ----------------------------------------------------


def content_states(
    conn: Connection, ids: Sequence[int]
) -> list[tuple[int, str, str | None, str | None]]:
    """(id, status, settled_reason, outbox state) of our messages among `ids` that still hold
    a text or media URLs."""
    if not ids:
        return []
    m = messages.c
    stmt = (
        select(m.id, m.status, m.settled_reason, outbox.c.state)
        .select_from(messages.outerjoin(outbox, outbox.c.message_id == m.id))
        .where(
            m.id.in_(sorted(set(ids))),
            m.origin == "api",
            or_(m.text.is_not(None), m.media_urls.is_not(None)),
        )
    )
    return [(int(r.id), r.status, r.settled_reason, r.state) for r in conn.execute(stmt)]


def erase_content(conn: Connection, ids: Sequence[int], now: datetime) -> int:
    """Forget the text and media URLs of these messages (their length, encoding and segments
    stay); `content_erased_at` says when."""
    if not ids:
        return 0
    stmt = (
        update(messages)
        .where(messages.c.id.in_(sorted(set(ids))))
        .values(text=None, media_urls=None, content_erased_at=now)
    )
    return int(conn.execute(stmt).rowcount)
