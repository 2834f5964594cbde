"""All SQL that writes messages, their parts and their status events: the projector's batch
writes, and our own changes (a send stored, its UUID adopted).

Functions take an open connection inside a transaction; the caller owns commit/rollback. They
are synchronous (`Connection`): the projector and the send flow run a whole transaction in one
go on the process's writer (see db/engine.py), so a batch costs no thread round trip per
statement. Dedupe is always insert-on-conflict with RETURNING, never select-then-insert (the
database is the only fair referee under concurrency).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
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
    cols = ("id", "message_uuid", *MESSAGE_MUTABLE)
    sql = select_in_sql(conn.dialect, messages, cols, "message_uuid", len(uuid_list), lock=True)
    out: dict[str, Row] = {}
    for r in conn.exec_driver_sql(sql, tuple(uuid_list)):
        values = dict(zip(MESSAGE_MUTABLE, r[2:], strict=True))
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


@dataclass(frozen=True, slots=True)
class LocalChange:
    """A status change we make ourselves (a send stored, accepted or refused by Plivo)."""

    message_id: int
    status: str
    previous_status: str | None
    detail: dict[str, Any]
    key: str = ""  # tells apart a second visit of the same status (an operator's resend)


def insert_local_events(conn: Connection, changes: Sequence[LocalChange], now: datetime) -> None:
    """Record our own status changes in the history, so the timeline and the live stream show
    every change, not only those callbacks make. One per message and status."""
    if not changes:
        return
    rows = [
        {
            "message_id": c.message_id,
            "message_uuid": None,
            "status": c.status,
            "previous_status": c.previous_status,
            "message_status": c.status,
            "effect": "applied",
            "dedupe_key": f"local:{c.message_id}:{c.status}{':' + c.key if c.key else ''}",
            "source": "local",
            "received_at": now,
            "payload": json.dumps(c.detail),
        }
        for c in changes
    ]
    conn.execute(insert_ignore(conn.dialect, status_events, ["dedupe_key"]), rows)


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


def insert_local_message(conn: Connection, values: Mapping[str, Any]) -> int:
    """Create a message of our own (origin "api", status "accepted"); returns its local id."""
    row = {"origin": "api", "direction": "outbound", "status": "accepted", **values}
    result = conn.execute(messages.insert().returning(messages.c.id), [row])
    return int(result.scalar_one())


def uuid_claim(uuid: str, now: datetime) -> dict[str, Any]:
    """A short-lived row that reserves a MessageUUID inside the transaction adopting it."""
    return {
        "message_uuid": uuid,
        "origin": "claim",
        "direction": "outbound",
        "status": "accepted",
        "has_conflict": False,
        "created_at": now,
        "updated_at": now,
    }


def adopt_placeholder(conn: Connection, local_id: int, uuid: str, now: datetime) -> int | None:
    """Give local message `local_id` its Plivo UUID, taking over a placeholder if a fast callback
    already created one: its events and parts move over and its status applies to ours.

    Returns the id of the callback's placeholder when one was adopted (that row is gone).
    Race-free with concurrent callback batches: the UUID is first claimed with an
    insert-if-absent (which waits for a batch that is inserting the same UUID to commit), then
    its row is locked, merged and deleted before the local row takes the UUID, all in the
    caller's write transaction.
    """
    stmt = insert_ignore(conn.dialect, messages, ["message_uuid"]).returning(messages.c.id)
    ours = conn.execute(stmt, [uuid_claim(uuid, now)]).first() is not None
    found = (
        conn.execute(
            lock_for_update(conn.dialect, select(messages).where(messages.c.message_uuid == uuid))
        )
        .mappings()
        .one()
    )
    if not ours and found["origin"] != "callback":
        raise RuntimeError(f"MessageUUID {uuid} already belongs to message {found['id']}")
    placeholder_id = found["id"]
    values: dict[str, Any] = {"message_uuid": uuid, "updated_at": now}
    if not ours:
        conn.execute(
            update(status_events)
            .where(status_events.c.message_id == placeholder_id)
            .values(message_id=local_id)
        )
        conn.execute(
            update(message_parts)
            .where(message_parts.c.message_id == placeholder_id)
            .values(message_id=local_id)
        )
        # Everything the callbacks established wins over our local "accepted" (rank -1);
        # what we sent (to, from, type) stays as we sent it.
        for col in MESSAGE_MUTABLE:
            if col not in ("to_number", "from_number", "type"):
                values[col] = found[col]
        values["updated_at"] = now
    conn.execute(messages.delete().where(messages.c.id == placeholder_id))
    conn.execute(update(messages).where(messages.c.id == local_id).values(values))
    return None if ours else int(placeholder_id)
