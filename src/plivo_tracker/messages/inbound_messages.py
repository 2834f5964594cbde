"""The projector's applier for inbound messages (journal source "inbound", issue 13).

A message sent to one of our numbers is acknowledged like a status callback: one journal row
(inbound/journal.py). Here, in the projector's transaction and in journal order, each becomes
a row of `messages` (direction and origin "inbound", status "received") and one `status_events`
row (status "received", source "inbound", the payload as received), whose id is the message's
place in the live stream. Both inserts ignore what exists already (the message's UUID, the
event's dedupe key "inbound:<uuid>"), so applying a row twice changes nothing, and the result
does not depend on how the journal is cut into passes.

Registered in messages/projector.py (`KINDS["inbound"]`, `APPLIERS["inbound"]`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Connection, select

from plivo_tracker.db.dialect import insert_ignore_returning
from plivo_tracker.inbound.journal import payload_fields
from plivo_tracker.messages import writes
from plivo_tracker.messages.models import messages
from plivo_tracker.messages.projection import Change, PassOptions, Projection
from plivo_tracker.plivo.callback import UnparseableCallback
from plivo_tracker.plivo.inbound import KIND, InboundMessage, parse_inbound

log = structlog.get_logger(__name__)

_MESSAGE_COLS = (
    "message_uuid",
    "origin",
    "direction",
    "status",
    "from_number",
    "to_number",
    "type",
    "text",
    "media_urls",
    "units",
    "total_rate",
    "total_amount",
    "inbound",
    "has_conflict",
    "content_erased_at",
    "created_at",
    "updated_at",
)
# What STORE_MESSAGE_TEXT=false keeps out of an inbound message's stored payload.
_CONTENT = ("Text", "Body")
_MEDIA_PREFIX = "Media"


def _parse(row: dict[str, Any]) -> InboundMessage | None:
    """A journal row as a message; None for one that no longer parses (it was parsed once,
    when it was acknowledged: logged and skipped)."""
    try:
        return parse_inbound(payload_fields(row["payload"]))
    except (UnparseableCallback, ValueError) as exc:
        log.error("projector.unparseable_row", journal_id=row["id"], error=str(exc))
        return None


def _message_row(
    msg: InboundMessage, received_at: datetime, now: datetime, erase: bool
) -> tuple[Any, ...]:
    extras = msg.extras()
    if erase:
        extras["media"] = []
    return (
        msg.message_uuid,
        KIND,  # origin
        KIND,  # direction
        msg.status.value,
        msg.from_number,
        msg.to_number,
        msg.type,
        None if erase else msg.text,
        None if erase or not msg.media else json.dumps(msg.media_urls),
        msg.units,
        msg.total_rate,
        msg.total_amount,
        json.dumps(extras, ensure_ascii=False),
        False,
        now if erase else None,
        received_at,  # created: when it reached us
        now,
    )


def _stored_payload(payload: str, erase: bool) -> str:
    """The event's payload: every field as received, but with STORE_MESSAGE_TEXT=false without
    the text and the media (the journal row keeps them until the purge)."""
    if not erase:
        return payload
    flat: dict[str, Any] = json.loads(payload)
    kept = {k: v for k, v in flat.items() if k not in _CONTENT and not k.startswith(_MEDIA_PREFIX)}
    return json.dumps(kept, ensure_ascii=False, sort_keys=True)


def _ids(conn: Connection, uuids: Sequence[str]) -> dict[str, int]:
    if not uuids:
        return {}
    stmt = select(messages.c.message_uuid, messages.c.id).where(
        messages.c.message_uuid.in_(list(uuids))
    )
    return {u: int(i) for u, i in conn.execute(stmt)}


def apply_inbound(
    conn: Connection, rows: Sequence[dict[str, Any]], now: datetime, options: PassOptions
) -> Projection:
    """Apply a run of inbound journal rows, in journal order: the messages, then their
    "received" events (set-based: one insert each), then what the new messages cause
    (`options.on_inbound`: opt-out keywords). With `options.erasure` (STORE_MESSAGE_TEXT=
    false) no text or media is stored."""

    arrived = [(row, msg) for row in rows if (msg := _parse(row)) is not None]
    if not arrived:
        return Projection()
    erase = options.erasure is not None
    # In journal order, so message ids follow arrival. No lock order to keep with other
    # writers: inbound UUIDs are Plivo's, never one of ours, and one pass runs at a time.
    created = {
        uuid: int(id_)
        for uuid, id_ in insert_ignore_returning(
            conn,
            messages,
            _MESSAGE_COLS,
            ["message_uuid"],
            ["message_uuid", "id"],
            [_message_row(m, row["received_at"], now, erase) for row, m in arrived],
        )
    }
    # A UUID stored before (a status callback's placeholder): the event goes to that message.
    known = [m.message_uuid for _, m in arrived if m.message_uuid not in created]
    ids = created | _ids(conn, known)
    events = writes.insert_events(
        conn,
        [
            {
                "message_id": ids[m.message_uuid],
                "message_uuid": m.message_uuid,
                "status": m.status.value,
                "previous_status": None,
                "message_status": m.status.value,
                "sequence": None,
                "error_code": None,
                "effect": "applied",
                "dedupe_key": m.dedupe_key,
                "source": KIND,
                "nonce": row["nonce"],
                "signature_scheme": row["signature_scheme"],
                "method": row["method"],
                "plivo_time": None,
                "received_at": row["received_at"],
                "payload": _stored_payload(row["payload"], erase),
                "headers": row["headers"],
            }
            for row, m in arrived
        ],
    )
    # Each new inbound message is known here, with its local id, in journal order.
    new = [(created[m.message_uuid], row, m) for row, m in arrived if m.message_uuid in created]
    for _, row, m in new:
        options.deltas.add(
            {
                "origin": KIND,
                "created_at": row["received_at"],  # as `_message_row` stores it
                "status": m.status.value,
                **dict.fromkeys(("error_code", "mcc", "mnc", "sent_at", "delivered_at")),
            }
        )
    if options.on_inbound is not None and new:
        # The text as received, also with STORE_MESSAGE_TEXT=false: a STOP is honoured.
        arrivals = [(message_id, m.from_number, m.to_number, m.text) for message_id, _, m in new]
        options.on_inbound(conn, arrivals, now)
    result = Projection()
    result.changes = [
        Change(message_id, m.status.value, None)
        for message_id, _, m in new
        if m.dedupe_key in events
    ]
    return result
