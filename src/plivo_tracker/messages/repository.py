"""All SQL for messages, parts, events, nonces and the quarantine: writes and lookups.

Functions take an open connection inside a transaction; the caller owns commit/rollback. The
writes of the callback batch are synchronous (`Connection`): the group committer runs the whole
batch in one go, in a writer thread on SQLite or through `run_sync` on PostgreSQL, so a batch
costs no thread round trip per statement. Reads and the send flow's writes are async.
Dedupe is always insert-on-conflict with RETURNING, never select-then-insert (the database is the
only fair referee under concurrency).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from plivo_tracker.db.base import MAX_ID
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
    callback_nonces,
    message_parts,
    messages,
    send_attempts,
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


# ---- reads -------------------------------------------------------------------------------


async def find_message(conn: AsyncConnection, ref: str) -> dict[str, Any] | None:
    """A message by local id (digits) or by MessageUUID (its own or one of its parts')."""
    if ref.isdigit():
        # Ids are BIGINT: more digits than that, or digits int() refuses ("²" is a digit to
        # isdigit()), name no message, instead of failing the query (a 500 before).
        if not ref.isascii() or len(ref) > 19 or int(ref) > MAX_ID:
            return None
        cond = messages.c.id == int(ref)
    else:
        part_owner = select(message_parts.c.message_id).where(message_parts.c.part_uuid == ref)
        cond = or_(messages.c.message_uuid == ref, messages.c.id.in_(part_owner.scalar_subquery()))
    row = (await conn.execute(select(messages).where(cond).limit(1))).mappings().first()
    return dict(row) if row is not None else None


async def message_parts_of(conn: AsyncConnection, message_id: int) -> list[dict[str, Any]]:
    stmt = (
        select(message_parts)
        .where(message_parts.c.message_id == message_id)
        .order_by(message_parts.c.part_index, message_parts.c.id)
    )
    return [dict(r) for r in (await conn.execute(stmt)).mappings()]


async def message_attempts(conn: AsyncConnection, message_id: int) -> list[dict[str, Any]]:
    """Every attempt to send the message and every lookup of an ambiguous one, oldest first."""
    stmt = (
        select(
            send_attempts.c.attempt,
            send_attempts.c.started_at,
            send_attempts.c.finished_at,
            send_attempts.c.outcome,
            send_attempts.c.http_status,
            send_attempts.c.detail,
            send_attempts.c.api_id,
        )
        .where(send_attempts.c.message_id == message_id)
        .order_by(send_attempts.c.id)
    )
    return [dict(r) for r in (await conn.execute(stmt)).mappings()]


async def resend_chain(conn: AsyncConnection, message_id: int) -> list[dict[str, Any]]:
    """The message's resend chain, oldest first: the original, then each resend (`attempt_of`
    points at the message it resends). A message that was never resent is a chain of one."""
    cols = (messages.c.id, messages.c.attempt_of, messages.c.status, messages.c.error_code)
    rows: dict[int, dict[str, Any]] = {}
    current: int | None = message_id
    while current is not None and current not in rows and len(rows) < 20:  # back to the root
        row = (await conn.execute(select(*cols).where(messages.c.id == current))).mappings().first()
        if row is None:
            break
        rows[current] = dict(row)
        current = row["attempt_of"]
    chain = sorted(rows.values(), key=lambda r: r["id"])
    while chain and len(chain) < 20:  # forward to the newest resend
        nxt = (
            (await conn.execute(select(*cols).where(messages.c.attempt_of == chain[-1]["id"])))
            .mappings()
            .first()
        )
        if nxt is None:
            break
        chain.append(dict(nxt))
    return [{k: r[k] for k in ("id", "status", "error_code")} for r in chain]


async def message_events(conn: AsyncConnection, message_id: int) -> list[dict[str, Any]]:
    stmt = (
        select(status_events)
        .where(status_events.c.message_id == message_id)
        .order_by(status_events.c.id)
    )
    return [dict(r) for r in (await conn.execute(stmt)).mappings()]


async def nonces_stored(conn: AsyncConnection, nonces: Sequence[str]) -> set[str]:
    """Which of these nonces are committed (used by the crash test and the spool replayer)."""
    found: set[str] = set()
    for start in range(0, len(nonces), 500):
        chunk = list(nonces[start : start + 500])
        stmt = select(callback_nonces.c.nonce).where(callback_nonces.c.nonce.in_(chunk))
        found.update((await conn.execute(stmt)).scalars().all())
    return found


# ---- the live stream and the list --------------------------------------------------------


def events_after(
    conn: Connection, after: int, limit: int, message_id: int | None = None
) -> list[dict[str, Any]]:
    """Events with an id above `after`, oldest first, with their message's UUID (the stream's
    source: the hub and every ?since= replay read through here, on a `Reader`)."""
    e = status_events
    stmt = (
        select(
            e.c.id,
            e.c.message_id,
            messages.c.message_uuid,
            e.c.message_status,
            e.c.previous_status,
            e.c.error_code,
            e.c.received_at,
            # Our own events carry a small JSON detail (e.g. the placeholder a send adopted);
            # callbacks' payloads stay out of the stream's reads.
            case((e.c.source == "local", e.c.payload), else_=None).label("detail"),
        )
        .join(messages, messages.c.id == e.c.message_id)
        .where(e.c.id > after)
        .order_by(e.c.id)
        .limit(limit)
    )
    if message_id is not None:
        stmt = stmt.where(e.c.message_id == message_id)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def newest_event_id(conn: Connection) -> int:
    return int(conn.execute(select(func.max(status_events.c.id))).scalar() or 0)


@dataclass(frozen=True, slots=True)
class MessageQuery:
    """Filters of GET /api/messages (all optional; combined with AND)."""

    statuses: tuple[str, ...] = ()
    to: tuple[str, ...] = ()  # spellings of one number ("+1415…", "1415…")
    from_: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None
    before_id: int | None = None  # the cursor: newest first, ids below this one
    ids: tuple[int, ...] = ()  # only these messages (the dashboard fetching rows it lacks)


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def list_messages(conn: AsyncConnection, q: MessageQuery, limit: int) -> list[dict[str, Any]]:
    """Messages matching `q`, newest first (by id), at most `limit`."""
    m = messages
    stmt = select(m).where(m.c.origin != "claim").order_by(m.c.id.desc()).limit(limit)
    if q.statuses:
        stmt = stmt.where(m.c.status.in_(q.statuses))
    if q.to:
        stmt = stmt.where(m.c.to_number.in_(q.to))
    if q.from_:
        stmt = stmt.where(m.c.from_number.in_(q.from_))
    if q.since is not None:
        stmt = stmt.where(m.c.created_at >= q.since)
    if q.until is not None:
        stmt = stmt.where(m.c.created_at < q.until)
    if q.before_id is not None:
        stmt = stmt.where(m.c.id < q.before_id)
    if q.ids:
        stmt = stmt.where(m.c.id.in_(q.ids))
    if q.text:
        pattern = f"%{_like_escaped(q.text.lower())}%"
        stmt = stmt.where(
            or_(
                func.lower(m.c.text).like(pattern, escape="\\"),
                func.lower(m.c.message_uuid).like(pattern, escape="\\"),
            )
        )
    return [dict(r) for r in (await conn.execute(stmt)).mappings()]
