"""All SQL that reads messages: one message with its parts, attempts, events and resend
chain; the list and its filters; the live stream's events in id order.

Reads are async (AsyncConnection) except the stream's, which run on a `Reader` (db/engine.py).
Writes live in messages/writes.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from plivo_tracker.db.base import MAX_ID
from plivo_tracker.messages.models import (
    callback_nonces,
    message_parts,
    messages,
    send_attempts,
    status_events,
)

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
            # An inbound message's arrival is a frame of its own ("type": "message").
            e.c.source,
            *(
                case((e.c.source == "inbound", col), else_=None).label(name)
                for name, col in (
                    ("from_number", messages.c.from_number),
                    ("to_number", messages.c.to_number),
                    ("text", messages.c.text),
                    ("media_urls", messages.c.media_urls),
                )
            ),
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
    # The other party (the dashboard's Number column): the recipient of ours, the sender of an
    # inbound message; our own number, which both directions carry, does not match them all.
    number: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None
    before_id: int | None = None  # the cursor: newest first, ids below this one
    ids: tuple[int, ...] = ()  # only these messages (the dashboard fetching rows it lacks)
    direction: str | None = None  # "inbound" | "outbound"


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
    if q.number:
        stmt = stmt.where(
            or_(
                and_(m.c.direction == "outbound", m.c.to_number.in_(q.number)),
                and_(m.c.direction == "inbound", m.c.from_number.in_(q.number)),
            )
        )
    if q.since is not None:
        stmt = stmt.where(m.c.created_at >= q.since)
    if q.until is not None:
        stmt = stmt.where(m.c.created_at < q.until)
    if q.before_id is not None:
        stmt = stmt.where(m.c.id < q.before_id)
    if q.ids:
        stmt = stmt.where(m.c.id.in_(q.ids))
    if q.direction is not None:
        stmt = stmt.where(m.c.direction == q.direction)
    if q.text:
        pattern = f"%{_like_escaped(q.text.lower())}%"
        stmt = stmt.where(
            or_(
                func.lower(m.c.text).like(pattern, escape="\\"),
                func.lower(m.c.message_uuid).like(pattern, escape="\\"),
            )
        )
    return [dict(r) for r in (await conn.execute(stmt)).mappings()]
