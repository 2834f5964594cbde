"""A SQLite database with rows in every table, for `db copy`'s tests and bench/db_copy.py:
`seed(url, n)` writes n messages (ours, inbound, callback-only; multipart, resends, erased
texts, conflicts) with their events, journal rows, nonces, attempts and outbox rows, plus
quarantine rows with binary bodies, idempotency keys, opt-outs, leases, the dispatch state, a
rate-limit bucket, the projector's cursor and the statistics rollups (counted as the projector
counts them). Values chosen to test a round trip: microsecond timestamps, booleans, bytes that
are not UTF-8, JSON, non-ASCII text and emoji. Deterministic for a given n.

Written straight into the database (the product's own paths are exercised by the test that
drives the app); it imports nothing from the test suite, so the bench can use it too.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from plivo_tracker.db.dialect import insert_ignore
from plivo_tracker.db.engine import WRITE, sync_sqlite_engine
from plivo_tracker.db.migrate import upgrade_sqlite
from plivo_tracker.messages.models import (
    callback_nonces,
    cursors,
    dispatch_state,
    idempotency_keys,
    journal,
    leases,
    message_parts,
    messages,
    outbox,
    quarantine,
    rate_limits,
    send_attempts,
    status_events,
)
from plivo_tracker.messages.rollups import Deltas
from plivo_tracker.optouts.models import opt_out_events, opt_outs

CHUNK = 2000
TEXTS = (
    "Your code is 482193",
    "Grüße aus Köln — café ☕",
    "Votre colis arrive 🚚📦 demain",
    "你好，世界",
    "Emoji only 😀😃😄 and a ZWJ 👩‍👩‍👧",
    "quotes \" ' and a backslash \\ and a tab\t",
)


def _message(rng: random.Random, i: int, base: datetime) -> dict[str, Any]:
    created = base + timedelta(seconds=i * 3, microseconds=rng.randrange(1_000_000))
    kind = rng.random()
    uuid = f"{i:08x}-{rng.getrandbits(64):016x}"
    status = rng.choice(("delivered", "delivered", "delivered", "sent", "undelivered", "failed"))
    row: dict[str, Any] = {
        "id": i,
        "message_uuid": uuid,
        "origin": "api",
        "direction": "outbound",
        "status": status,
        "status_sequence": 3,
        "status_at": created + timedelta(seconds=2, microseconds=7),
        "error_code": None if status in ("delivered", "sent") else rng.choice(("30", "20", "80")),
        "to_number": f"+1415555{i % 10000:04d}",
        "from_number": "14155550100",
        "type": "sms",
        "units": 1,
        "total_rate": "0.00500",
        "total_amount": "0.00500",
        "mcc": rng.choice(("310", "234", None)),
        "mnc": "004",
        "part_count": None,
        "has_conflict": rng.random() < 0.02,
        "created_at": created,
        "updated_at": created + timedelta(seconds=5),
        "sent_at": created + timedelta(seconds=1, microseconds=123),
        "delivered_at": created + timedelta(seconds=2) if status == "delivered" else None,
        "text": TEXTS[i % len(TEXTS)],
        "media_urls": None,
        "encoding": "UCS-2" if i % len(TEXTS) else "GSM-7",
        "segments": 1,
        "error_detail": None,
        "settled_reason": "no_receipt" if status == "sent" and i % 3 == 0 else None,
        "swept_at": None,
        "send_options": json.dumps({"log": True, "message_expiry": 600}),
        "attempt_of": None,
        "content_erased_at": None,
        "inbound": None,
    }
    if kind < 0.1:  # inbound
        row.update(
            origin="inbound",
            direction="inbound",
            status="received",
            error_code=None,
            to_number="14155550100",
            from_number=f"+1415556{i % 10000:04d}",
            sent_at=None,
            delivered_at=None,
            send_options=None,
            settled_reason=None,
            inbound=json.dumps({"message_intent": None, "media_count": 0, "media": []}),
        )
    elif kind < 0.2:  # known only from callbacks
        row.update(origin="callback", text=None, send_options=None, encoding=None)
    elif kind < 0.25:  # MMS, its text erased
        row.update(
            type="mms",
            media_urls=json.dumps(["https://example.com/a.png"]),
            text=None,
            content_erased_at=created + timedelta(seconds=9),
        )
    elif kind < 0.3:
        row.update(part_count=2, units=2, segments=2)
    return row


def _history(row: dict[str, Any], *, seq: int) -> dict[str, list[dict[str, Any]]]:
    i = row["id"]
    at = row["created_at"]
    out: dict[str, list[dict[str, Any]]] = {
        "events": [],
        "journal": [],
        "nonces": [],
        "attempts": [],
        "outbox": [],
        "parts": [],
    }
    statuses = ("received",) if row["direction"] == "inbound" else ("queued", "sent", row["status"])
    for n, status in enumerate(statuses, start=1):
        key = f"{row['message_uuid']}|{status}|{n}"
        payload = json.dumps({"MessageUUID": row["message_uuid"], "Status": status, "Text": "é🚀"})
        headers = json.dumps({"content-type": "application/x-www-form-urlencoded"})
        received = at + timedelta(seconds=n, microseconds=n * 111)
        source = "inbound" if status == "received" else "callback"
        nonce = f"{i}{n}{seq:06d}"
        out["events"].append(
            {
                "message_id": i,
                "message_uuid": row["message_uuid"],
                "status": status,
                "previous_status": None,
                "message_status": status,
                "sequence": n,
                "error_code": None,
                "effect": "applied",
                "dedupe_key": key,
                "source": source,
                "nonce": nonce,
                "signature_scheme": "v3",
                "method": "POST",
                "plivo_time": received - timedelta(microseconds=500),
                "received_at": received,
                "payload": payload,
                "headers": headers,
            }
        )
        out["journal"].append(
            {
                "received_at": received,
                "source": source,
                "method": "POST",
                "dedupe_key": key,
                "message_key": row["message_uuid"],
                "status": status,
                "nonce": nonce,
                "signature_scheme": "v3",
                "payload": payload,
                "headers": headers,
            }
        )
        out["nonces"].append({"nonce": nonce, "received_at": received})
    if row["origin"] == "api":
        out["attempts"].append(
            {
                "message_id": i,
                "attempt": 1,
                "started_at": at,
                "finished_at": at + timedelta(microseconds=40_321),
                "outcome": "accepted",
                "http_status": 202,
                "detail": None,
                "api_id": f"api-{i}",
            }
        )
        out["outbox"].append(
            {
                "message_id": i,
                "state": "done",
                "attempts": 1,
                "next_attempt_at": at,
                "first_attempt_at": at,
                "created_at": at,
                "lookups": 0,
            }
        )
    if row["part_count"]:
        for k in (1, 2):
            out["parts"].append(
                {
                    "message_id": i,
                    "part_uuid": f"{row['message_uuid']}-p{k}",
                    "part_info": f"{k} of 2",
                    "part_index": k,
                    "status": row["status"],
                    "status_sequence": 3,
                    "status_at": at + timedelta(seconds=2),
                    "updated_at": at + timedelta(seconds=3),
                }
            )
    return out


def _extras(conn: Connection, n: int, first_id: int, base: datetime) -> None:
    """The small tables: quarantine, idempotency keys, opt-outs, leases, pause, buckets."""
    conn.execute(
        insert(quarantine),
        [
            {
                "received_at": base + timedelta(seconds=k, microseconds=k),
                "path": "/plivo/callback",
                "method": "POST",
                "query": "a=1&b=é",
                "headers": json.dumps({"x": "y"}),
                "body": bytes([0, 255, 254, 0x80, k % 256]) + "é🚀".encode(),
                "reason": "unparseable",
                "nonce": f"q{first_id}-{k}",
            }
            for k in range(max(2, n // 1000))
        ],
    )
    conn.execute(
        insert(idempotency_keys),
        [
            {
                "key": f"key-{first_id}-{k}-ключ-🔑",
                "request_hash": f"{k:064x}",
                "response": json.dumps({"messages": [{"id": k + 1}]}, ensure_ascii=False),
                "created_at": base + timedelta(seconds=k, microseconds=999_999),
            }
            for k in range(max(2, n // 100))
        ],
    )
    numbers = [f"+1{first_id % 1000:03d}557{k:04d}" for k in range(max(2, n // 1000))]
    conn.execute(
        insert(opt_outs),
        [
            {
                "number": number,
                "opted_out_at": base + timedelta(minutes=k),
                "source": "keyword" if k % 2 else "cli",
                "message_id": first_id + k if k % 2 else None,
                "keyword": "STOP" if k % 2 else None,
                "note": None if k % 2 else "asked by phone — «non»",
            }
            for k, number in enumerate(numbers)
        ],
    )
    conn.execute(
        insert(opt_out_events),
        [
            {
                "number": number,
                "action": action,
                "source": "cli",
                "message_id": None,
                "keyword": None,
                "note": None,
                "at": base + timedelta(minutes=k, seconds=j),
            }
            for k, number in enumerate(numbers)
            for j, action in enumerate(("opt_out", "opt_in", "opt_out"))
        ],
    )
    conn.execute(
        insert(leases),
        [
            {"name": f"seed-{first_id}-a", "owner": "host-1:123", "until": base},
            {"name": f"seed-{first_id}-b", "owner": None, "until": None},
        ],
    )
    conn.execute(
        insert_ignore(conn.dialect, dispatch_state, ["name"]),
        [
            {
                "name": "dispatch",
                "paused": False,  # (booleans: messages.has_conflict has both)
                "paused_by": None,
                "reason": "resumed after maintenance ⚙",
                "since": base,
                "next_probe_at": None,
                "probes": 0,
                "updated_at": base,
            }
        ],
    )
    conn.execute(
        insert_ignore(conn.dialect, rate_limits, ["name"]),
        [{"name": "mps", "tokens": 4.123456789012345, "updated": 1.5e9 + 0.1}],
    )


def seed(url: str, n: int, *, first_id: int = 1, seed_value: int = 7) -> None:
    """Migrate the SQLite database at `url` and write n messages (ids from `first_id`) and
    everything around them. Into a database in use (`first_id` past its messages) it adds rows
    without touching any: small tables' keys are its own, the projector's cursor is moved past
    the journal rows it adds (as if applied)."""
    upgrade_sqlite(url)
    engine = sync_sqlite_engine(url)
    rng = random.Random(seed_value)
    base = datetime(2026, 6, 1, 12, 0, 0, 123_456, tzinfo=UTC)
    try:
        with engine.connect() as conn:
            # A scratch database: no fsync per chunk (outside any transaction, on the driver).
            conn.connection.dbapi_connection.execute("PRAGMA synchronous=OFF")  # type: ignore[union-attr]
            conn = conn.execution_options(**WRITE)
            end = first_id + n
            for start in range(first_id, end, CHUNK):
                with conn.begin():
                    rows = [_message(rng, i, base) for i in range(start, min(end, start + CHUNK))]
                    for row in rows:  # some resends, pointing at an earlier failure
                        if row["id"] % 50 == 0 and row["origin"] == "api":
                            row["attempt_of"] = row["id"] - 1
                    conn.execute(insert(messages), rows)
                    hist: dict[str, list[dict[str, Any]]] = {}
                    for row in rows:
                        for name, items in _history(row, seq=row["id"]).items():
                            hist.setdefault(name, []).extend(items)
                    for table, name in (
                        (message_parts, "parts"),
                        (status_events, "events"),
                        (journal, "journal"),
                        (callback_nonces, "nonces"),
                        (send_attempts, "attempts"),
                        (outbox, "outbox"),
                    ):
                        if hist.get(name):
                            conn.execute(insert(table), hist[name])
                    deltas = Deltas()
                    for row in rows:
                        deltas.add(row)
                    deltas.flush(conn)
            with conn.begin():
                _extras(conn, n, first_id, base)
                conn.execute(
                    update(cursors)
                    .where(cursors.c.name == "projector")
                    .values(
                        position=select(func.max(journal.c.id)).scalar_subquery(),
                        updated_at=base + timedelta(days=1),
                    )
                )
    finally:
        engine.dispose()
