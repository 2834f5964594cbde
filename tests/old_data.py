"""Rows of any age for the retention tests: messages with their history, nonces, idempotency
keys and quarantine rows, written straight into the database (the purge only reads ages), and
the messages counted in the statistics as the projector would have counted them."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select, update

from plivo_tracker.messages.models import (
    callback_nonces,
    cursors,
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
from tests.conftest import count_as_projected

PURGED_TABLES = (
    messages,
    status_events,
    message_parts,
    send_attempts,
    outbox,
    quarantine,
    idempotency_keys,
    callback_nonces,
    journal,
    stats_status,
    stats_errors,
    stats_carriers,
    stats_latency,
)
_serial = itertools.count(1)


def add_message(
    conn: Connection,
    now: datetime,
    age: timedelta,
    status: str = "delivered",
    *,
    changed_age: timedelta | None = None,
    origin: str = "api",
    settled_reason: str | None = None,
    outbox_state: str | None = "done",
    attempt_of: int | None = None,
    events: int = 3,
    parts: int = 0,
    error_code: str | None = None,
) -> int:
    """A message created `age` ago and last changed `changed_age` ago (default: `age`), with
    `events` status events, `parts` parts, one send attempt and an outbox row in
    `outbox_state` (None: none, a message known only from callbacks)."""
    created = now - age
    changed = now - (age if changed_age is None else changed_age)
    n = next(_serial)
    uuid = f"msg-{n}-{created.timestamp():.0f}"
    message_id = int(
        conn.execute(
            messages.insert().returning(messages.c.id),
            [
                {
                    "message_uuid": uuid,
                    "origin": origin,
                    "direction": "outbound",
                    "status": status,
                    "settled_reason": settled_reason,
                    "error_code": error_code,
                    "to_number": "+14155550101",
                    "from_number": "14155550100",
                    "type": "sms",
                    "mcc": "310",
                    "mnc": "004",
                    "has_conflict": False,
                    "created_at": created,
                    "updated_at": changed,
                    "sent_at": created + timedelta(seconds=1),
                    "delivered_at": created + timedelta(seconds=3)
                    if status == "delivered"
                    else None,
                    "text": "Your code is 482193" if origin == "api" else None,
                    "attempt_of": attempt_of,
                }
            ],
        ).scalar_one()
    )
    count_as_projected(conn, [message_id])
    for k in range(events):
        conn.execute(
            status_events.insert(),
            [
                {
                    "message_id": message_id,
                    "message_uuid": uuid,
                    "status": status,
                    "previous_status": None,
                    "message_status": status,
                    "sequence": k + 1,
                    "effect": "applied",
                    "dedupe_key": f"{uuid}:{k}",
                    "source": "callback",
                    "received_at": created + (changed - created) * (k + 1) / max(events, 1),
                    "payload": json.dumps({"MessageUUID": uuid, "To": "14155550101"}),
                }
            ],
        )
    for k in range(parts):
        conn.execute(
            message_parts.insert(),
            [
                {
                    "message_id": message_id,
                    "part_uuid": f"{uuid}-part-{k}",
                    "status": status,
                    "updated_at": changed,
                }
            ],
        )
    if origin == "api":
        conn.execute(
            send_attempts.insert(),
            [
                {
                    "message_id": message_id,
                    "attempt": 1,
                    "started_at": created,
                    "finished_at": created,
                    "outcome": "accepted",
                }
            ],
        )
    if outbox_state is not None:
        conn.execute(
            outbox.insert(),
            [
                {
                    "message_id": message_id,
                    "state": outbox_state,
                    "attempts": 1,
                    "next_attempt_at": created,
                    "created_at": created,
                }
            ],
        )
    return message_id


def add_nonce(conn: Connection, now: datetime, age: timedelta) -> str:
    nonce = f"nonce-{next(_serial)}"
    conn.execute(callback_nonces.insert(), [{"nonce": nonce, "received_at": now - age}])
    return nonce


def add_idempotency_key(conn: Connection, now: datetime, age: timedelta) -> str:
    key = f"key-{next(_serial)}"
    row = {"key": key, "request_hash": "0" * 64, "response": "{}", "created_at": now - age}
    conn.execute(idempotency_keys.insert(), [row])
    return key


def add_quarantine(conn: Connection, now: datetime, age: timedelta) -> int:
    row = {
        "received_at": now - age,
        "path": "/plivo/callback",
        "method": "POST",
        "body": b"Status=nope",
        "reason": "unknown status",
    }
    return int(conn.execute(quarantine.insert().returning(quarantine.c.id), [row]).scalar_one())


def add_journal_row(conn: Connection, now: datetime, age: timedelta, *, applied: bool) -> int:
    """A report in the journal, `age` old; `applied`: the projector's cursor moves to it."""
    n = next(_serial)
    row = {
        "received_at": now - age,
        "source": "callback",
        "method": "POST",
        "dedupe_key": f"journal-{n}",
        "message_key": f"uuid-{n}",
        "status": "sent",
        "payload": "{}",
    }
    journal_id = int(conn.execute(journal.insert().returning(journal.c.id), [row]).scalar_one())
    if applied:
        conn.execute(update(cursors).values(position=journal_id))
    return journal_id


def row_counts(conn: Connection) -> dict[str, int]:
    return {
        t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
        for t in PURGED_TABLES
    }


def ids(conn: Connection) -> set[int]:
    return {int(i) for i in conn.execute(select(messages.c.id)).scalars()}


def utcnow() -> datetime:
    return datetime.now(UTC)


def snapshot(conn: Connection, table: Any) -> list[tuple[Any, ...]]:
    return sorted(tuple(r) for r in conn.execute(select(table)))
