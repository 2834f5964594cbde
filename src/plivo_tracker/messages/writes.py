"""All SQL that writes statuses: messages, their parts and their status events, as the
projector applies the journal (Plivo's reports and our own changes).

Functions take an open connection inside a transaction; the caller owns commit/rollback. They
are synchronous (`Connection`): the projector and the send flow run a whole transaction in one
go on the process's writer (see db/engine.py), so a batch costs no thread round trip per
statement. Dedupe is always insert-on-conflict with RETURNING, never select-then-insert (the
database is the only fair referee under concurrency).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from plivo_tracker.db.dialect import (
    event_order_sql,
    from_driver_time,
    insert_ignore,
    insert_ignore_returning,
    lock_for_update,
    select_in_sql,
    update_by_id,
)
from plivo_tracker.messages.models import (
    message_parts,
    messages,
    status_events,
)

# Columns ingestion may change on a message, in one fixed set so one executemany UPDATE fits all.
MESSAGE_MUTABLE = (
    "status",
    "status_sequence",
    "status_at",
    "error_code",
    "to_number",
    "from_number",
    "type",
    "units",
    "total_rate",
    "total_amount",
    "mcc",
    "mnc",
    "part_count",
    "has_conflict",
    "updated_at",
    "sent_at",
    "delivered_at",
)
# Read with the mutable columns for the statistics (messages/rollups.py), never written back.
_READ_ONLY = ("origin", "created_at")
PART_MUTABLE = ("status", "status_sequence", "status_at", "error_code", "updated_at")


@dataclass(slots=True)
class Row:
    """A mutable snapshot of a row, used while applying one batch."""

    id: int
    values: dict[str, Any]


def ensure_messages(conn: Connection, placeholders: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """Create placeholder messages for UUIDs not stored yet; return the UUIDs created now.

    A callback can beat the send response (or belong to a message sent elsewhere): its message
    starts as a placeholder (origin "callback") that a later send adopts.
    """
    if not placeholders:
        return set()
    # Sorted, so concurrent writers on PostgreSQL take the unique-index locks in the same order.
    ordered = [placeholders[uuid] for uuid in sorted(placeholders)]
    cols = list(ordered[0])
    rows = [tuple(p[c] for c in cols) for p in ordered]
    created = insert_ignore_returning(
        conn, messages, cols, ["message_uuid"], ["message_uuid"], rows
    )
    return {r[0] for r in created}


def lock_messages_by_uuid(conn: Connection, uuids: Iterable[str]) -> dict[str, Row]:
    """Load (and on PostgreSQL row-lock, in id order) the messages with these UUIDs."""
    uuid_list = sorted(set(uuids))
    if not uuid_list:
        return {}
    # The mutable columns, then what the statistics also count (read, never written back).
    cols = ("id", "message_uuid", *MESSAGE_MUTABLE, *_READ_ONLY)
    sql = select_in_sql(conn.dialect, messages, cols, "message_uuid", len(uuid_list), lock=True)
    out: dict[str, Row] = {}
    for r in conn.exec_driver_sql(sql, tuple(uuid_list)):
        values = dict(zip((*MESSAGE_MUTABLE, *_READ_ONLY), r[2:], strict=True))
        # Compared with event times; other timestamps are only written back unchanged.
        values["status_at"] = from_driver_time(values["status_at"])
        values["has_conflict"] = bool(values["has_conflict"])
        out[r[1]] = Row(int(r[0]), values)
    return out


def ensure_parts(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> set[str]:
    """Create part rows that do not exist yet; return the part UUIDs created now."""
    if not rows:
        return set()
    stmt = insert_ignore(conn.dialect, message_parts, ["part_uuid"]).returning(
        message_parts.c.part_uuid
    )
    # In the order the reports came: part ids follow arrival, which the parent's roll-up
    # reads (rollup's first failure), so it is the same however the journal is cut into passes.
    # (One projector pass at a time: no lock ordering between concurrent writers is needed.)
    result = conn.execute(stmt, [dict(r) for r in rows])
    return set(result.scalars().all())


def load_parts(conn: Connection, message_ids: Iterable[int]) -> dict[int, dict[str, Row]]:
    """All parts of these messages, by message id then part UUID."""
    ids = sorted(set(message_ids))
    if not ids:
        return {}
    cols = [
        message_parts.c.id,
        message_parts.c.message_id,
        message_parts.c.part_uuid,
        message_parts.c.part_info,
        message_parts.c.part_index,
        *(message_parts.c[c] for c in PART_MUTABLE),
    ]
    stmt = select(*cols).where(message_parts.c.message_id.in_(ids)).order_by(message_parts.c.id)
    result = conn.execute(lock_for_update(conn.dialect, stmt))
    out: dict[int, dict[str, Row]] = {}
    for r in result.mappings():
        values = {c: r[c] for c in PART_MUTABLE}
        values["part_index"] = r["part_index"]
        out.setdefault(r["message_id"], {})[r["part_uuid"]] = Row(r["id"], values)
    return out


def begin_status_writes(conn: Connection, notify: bool = True) -> None:
    """Call first in a write transaction that may insert status events: it orders event ids by
    commit and wakes the live feeds of other processes (see `event_order_sql`). The purge calls
    it with `notify=False`: it writes nothing to stream, but waits its turn among the writers
    of statuses (PostgreSQL), so none of them can deadlock with it."""
    sql = event_order_sql(conn.dialect, notify)
    if sql is not None:
        conn.exec_driver_sql(sql)


def insert_events(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Insert events, skipping known dedupe keys; return {dedupe_key: event id} of the new ones."""
    if not rows:
        return {}
    cols = list(rows[0])
    values = [tuple(r[c] for c in cols) for r in rows]
    inserted = insert_ignore_returning(
        conn, status_events, cols, ["dedupe_key"], ["dedupe_key", "id"], values
    )
    return {key: int(id_) for key, id_ in inserted}


def update_event_effects(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Correct the effect and statuses of events (rows: _id, effect, previous_status,
    message_status)."""
    if not rows:
        return
    stmt = (
        update(status_events)
        .where(status_events.c.id == bindparam("_id"))
        .values(
            effect=bindparam("effect"),
            previous_status=bindparam("previous_status"),
            message_status=bindparam("message_status"),
        )
    )
    conn.execute(stmt, list(rows))


def update_messages(conn: Connection, rows: Sequence[Row]) -> None:
    if rows:
        update_by_id(conn, messages, MESSAGE_MUTABLE, [(r.id, r.values) for r in rows])


def update_parts(conn: Connection, rows: Sequence[Row]) -> None:
    if rows:
        update_by_id(conn, message_parts, PART_MUTABLE, [(r.id, r.values) for r in rows])


# What the projector may change on a message of ours besides the callback columns.
LOCAL_MUTABLE = (*MESSAGE_MUTABLE, "message_uuid", "error_detail")


def lock_messages_by_id(conn: Connection, ids: Iterable[int]) -> dict[int, Row]:
    """Load (and on PostgreSQL row-lock, in id order) these messages, by id."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    cols = (*LOCAL_MUTABLE, *_READ_ONLY)
    stmt = (
        select(messages.c.id, *(messages.c[c] for c in cols))
        .where(messages.c.id.in_(wanted))
        .order_by(messages.c.id)
    )
    out: dict[int, Row] = {}
    for r in conn.execute(lock_for_update(conn.dialect, stmt)).mappings():
        values = {c: r[c] for c in cols}
        values["has_conflict"] = bool(values["has_conflict"])
        out[int(r["id"])] = Row(int(r["id"]), values)
    return out


def update_local(conn: Connection, rows: Sequence[Row]) -> None:
    if rows:
        update_by_id(conn, messages, LOCAL_MUTABLE, [(r.id, r.values) for r in rows])


def uuid_holders(conn: Connection, uuids: Iterable[str]) -> dict[str, tuple[int, str]]:
    """Which messages hold these MessageUUIDs: UUID → (id, origin)."""
    wanted = sorted(set(uuids))
    if not wanted:
        return {}
    rows = conn.execute(
        select(messages.c.message_uuid, messages.c.id, messages.c.origin).where(
            messages.c.message_uuid.in_(wanted)
        )
    )
    return {r.message_uuid: (int(r.id), r.origin) for r in rows}


def merge_placeholder(conn: Connection, placeholder_id: int, into_id: int) -> dict[str, Any]:
    """Move a callback placeholder's events and parts to message `into_id` and delete it;
    returns the placeholder's columns (what its callbacks established)."""
    found = dict(
        conn.execute(
            lock_for_update(conn.dialect, select(messages).where(messages.c.id == placeholder_id))
        )
        .mappings()
        .one()
    )
    found["has_conflict"] = bool(found["has_conflict"])
    conn.execute(
        update(status_events)
        .where(status_events.c.message_id == placeholder_id)
        .values(message_id=into_id)
    )
    conn.execute(
        update(message_parts)
        .where(message_parts.c.message_id == placeholder_id)
        .values(message_id=into_id)
    )
    conn.execute(messages.delete().where(messages.c.id == placeholder_id))
    return found
