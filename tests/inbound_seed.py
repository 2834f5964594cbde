"""TEMPORARY seed of inbound messages for the conversations tests, until /plivo/inbound exists
in this tree: inserts one inbound message and its `received` event exactly as the shared
contract describes them (issue 13: a `messages` row with direction/origin "inbound", status
"received", the sender in `from_number`; one `status_events` row, status "received", source
"inbound", payload = every field as received, whose id is the live stream's id).

At merge, callers switch to a signed POST to /plivo/inbound through the simulator, and this
module goes away.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid as uuid_module
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from plivo_tracker.db.engine import WRITE, make_engine
from plivo_tracker.messages.models import messages, status_events
from plivo_tracker.messages.writes import begin_status_writes


@dataclass(frozen=True, slots=True)
class Seeded:
    message_id: int
    event_id: int
    message_uuid: str


def insert_inbound(
    conn: Connection,
    *,
    sender: str,
    our_number: str,
    text: str | None,
    media_urls: Sequence[str] = (),
    message_uuid: str | None = None,
    at: datetime | None = None,
) -> Seeded:
    """One inbound message and its `received` event, in the caller's write transaction."""
    begin_status_writes(conn)  # event ids in commit order; wakes other processes' live feeds
    now = at or datetime.now(UTC)
    uuid = message_uuid or str(uuid_module.uuid4())
    kind = "mms" if media_urls else "sms"
    payload: dict[str, Any] = {
        "From": sender.lstrip("+"),
        "To": our_number.lstrip("+"),
        "Text": text or "",
        "Type": kind,
        "MessageUUID": uuid,
        "Units": "1",
    }
    for i, url in enumerate(media_urls):
        payload[f"Media{i}"] = url
    message_id = conn.execute(
        messages.insert().returning(messages.c.id),
        [
            {
                "message_uuid": uuid,
                "origin": "inbound",
                "direction": "inbound",
                "status": "received",
                "status_at": now,
                "from_number": sender,
                "to_number": our_number,
                "type": kind,
                "units": 1,
                "text": text,
                "media_urls": json.dumps(list(media_urls)) if media_urls else None,
                "has_conflict": False,
                "created_at": now,
                "updated_at": now,
            }
        ],
    ).scalar_one()
    event_id = conn.execute(
        status_events.insert().returning(status_events.c.id),
        [
            {
                "message_id": message_id,
                "message_uuid": uuid,
                "status": "received",
                "previous_status": None,
                "message_status": "received",
                "effect": "applied",
                "dedupe_key": f"inbound:{uuid}",
                "source": "inbound",
                "received_at": now,
                "payload": json.dumps(payload),
            }
        ],
    ).scalar_one()
    return Seeded(int(message_id), int(event_id), uuid)


def insert_inbound_at(database_url: str, **fields: Any) -> Seeded:
    """`insert_inbound` in a database another process serves (its live feed polls it, or is
    woken by NOTIFY on PostgreSQL). Runs in a thread of its own: Playwright's sync API keeps an
    event loop in the caller's thread."""
    out: list[Seeded] = []
    failure: list[BaseException] = []

    async def run() -> None:
        engine = make_engine(database_url)
        try:
            async with engine.connect() as conn:
                conn = await conn.execution_options(**WRITE)
                async with conn.begin():
                    out.append(await conn.run_sync(lambda c: insert_inbound(c, **fields)))
        finally:
            await engine.dispose()

    def main() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(exc)

    worker = threading.Thread(target=main)
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return out[0]
