"""All SQL of the sending flow: idempotency keys, outbox rows, claims, attempts, the shared bucket.

Synchronous functions on the database writer (see db/engine.py), like the callback batch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, func, select, update

from plivo_tracker.db.dialect import (
    insert_ignore,
    lock_for_update,
    notify_outbox_sql,
    skip_locked,
)
from plivo_tracker.messages.models import (
    idempotency_keys,
    messages,
    outbox,
    rate_limits,
    send_attempts,
)
from plivo_tracker.messages.repository import (
    LocalChange,
    adopt_placeholder,
    begin_status_writes,
    insert_local_events,
    uuid_claim,
)
from plivo_tracker.messages.status import RANK, MessageStatus

if TYPE_CHECKING:
    from plivo_tracker.outbound.outbox import Validated


def claim_idempotency_key(
    conn: Connection, key: str, digest: str, now: datetime
) -> tuple[str, dict[str, Any]] | None:
    """Take the key for this request; if it was taken before, return (hash, stored response)."""
    stmt = insert_ignore(conn.dialect, idempotency_keys, ["key"]).returning(idempotency_keys.c.key)
    row = {"key": key, "request_hash": digest, "response": "", "created_at": now}
    if conn.execute(stmt, [row]).first() is not None:
        return None
    found = conn.execute(
        select(idempotency_keys.c.request_hash, idempotency_keys.c.response).where(
            idempotency_keys.c.key == key
        )
    ).one()
    return found.request_hash, json.loads(found.response or '{"messages": []}')


def store_idempotent_response(conn: Connection, key: str, response: dict[str, Any]) -> None:
    conn.execute(
        update(idempotency_keys)
        .where(idempotency_keys.c.key == key)
        .values(response=json.dumps(response))
    )


def notify_outbox(conn: Connection) -> None:
    """Wake dispatchers of other processes once this transaction commits (PostgreSQL)."""
    sql = notify_outbox_sql(conn.dialect)
    if sql is not None:
        conn.exec_driver_sql(sql)


def _queue_message(conn: Connection, values: dict[str, Any], now: datetime) -> int:
    """Insert a message of ours (status `accepted`) and its due outbox row; returns its id."""
    row = {
        "origin": "api",
        "direction": "outbound",
        "status": MessageStatus.ACCEPTED.value,
        "has_conflict": False,
        "created_at": now,
        "updated_at": now,
        **values,
    }
    message_id = int(conn.execute(messages.insert().returning(messages.c.id), [row]).scalar_one())
    conn.execute(
        outbox.insert(),
        [{"message_id": message_id, "state": "pending", "next_attempt_at": now, "created_at": now}],
    )
    detail = {"attempt_of": values["attempt_of"]} if values.get("attempt_of") else {}
    insert_local_events(conn, [LocalChange(message_id, MessageStatus.ACCEPTED, None, detail)], now)
    return message_id


def insert_outbound(conn: Connection, v: Validated, to: str, now: datetime) -> int:
    return _queue_message(
        conn,
        {
            "to_number": to,
            "from_number": v.src,
            "type": v.type,
            "text": v.text,
            "media_urls": json.dumps(v.media_urls) if v.media_urls else None,
            "encoding": v.encoding,
            "segments": v.segments,
        },
        now,
    )


@dataclass(frozen=True, slots=True)
class Claimed:
    message_id: int
    attempts: int
    first_attempt_at: datetime | None
    to: str
    src: str
    text: str | None
    media_urls: list[str] | None
    type: str


def resend(conn: Connection, message_ids: list[int], now: datetime) -> list[int]:
    """Queue one more attempt of each of our messages that failed with a configured code: a new
    message (`attempt_of` = the original) with its own outbox row. Only originals are repeated,
    and each at most once; returns the new message ids."""
    if not message_ids:
        return []
    already = select(messages.c.attempt_of).where(messages.c.attempt_of.in_(message_ids))
    originals = conn.execute(
        select(messages)
        .where(
            messages.c.id.in_(message_ids),
            messages.c.origin == "api",
            messages.c.attempt_of.is_(None),
            messages.c.id.not_in(already.scalar_subquery()),
        )
        .order_by(messages.c.id)
    ).mappings()
    copied = ("to_number", "from_number", "type", "text", "media_urls", "encoding", "segments")
    created = [
        _queue_message(conn, {**{c: m[c] for c in copied}, "attempt_of": m["id"]}, now)
        for m in list(originals)
    ]
    if created:
        notify_outbox(conn)
    return created


def claim_due(
    conn: Connection,
    now: datetime,
    owner: str,
    lease: timedelta,
    limit: int,
    state: str = "pending",
) -> list[Claimed]:
    """Lease up to `limit` due rows in `state` to `owner` (PostgreSQL: SKIP LOCKED, safe with
    many workers). The leased rows are `sending` ("pending") or `reconciling` ("reconcile")."""
    due = (
        select(outbox.c.message_id)
        .where(outbox.c.state == state, outbox.c.next_attempt_at <= now)
        .order_by(outbox.c.next_attempt_at, outbox.c.message_id)
        .limit(limit)
    )
    ids = list(conn.execute(skip_locked(conn.dialect, due)).scalars())
    if not ids:
        return []
    conn.execute(
        update(outbox)
        .where(outbox.c.message_id.in_(ids))
        .values(
            state="sending" if state == "pending" else "reconciling",
            lease_owner=owner,
            lease_until=now + lease,
        )
    )
    rows = conn.execute(
        select(
            outbox.c.message_id,
            outbox.c.attempts,
            outbox.c.first_attempt_at,
            messages.c.to_number,
            messages.c.from_number,
            messages.c.text,
            messages.c.media_urls,
            messages.c.type,
        )
        .join(messages, messages.c.id == outbox.c.message_id)
        .where(outbox.c.message_id.in_(ids))
        .order_by(outbox.c.message_id)
    )
    return [
        Claimed(
            r.message_id,
            r.attempts,
            r.first_attempt_at,
            r.to_number,
            r.from_number,
            r.text,
            json.loads(r.media_urls) if r.media_urls else None,
            r.type,
        )
        for r in rows
    ]


def _attempt_row(
    c: Claimed,
    started: datetime,
    now: datetime,
    outcome: str,
    status: int | None,
    detail: str | None,
) -> dict[str, Any]:
    return {
        "message_id": c.message_id,
        "attempt": c.attempts + 1,
        "started_at": started,
        "finished_at": now,
        "outcome": outcome,
        "http_status": status,
        "detail": detail,
    }


def _attempt(
    conn: Connection,
    c: Claimed,
    started: datetime,
    now: datetime,
    outcome: str,
    status: int | None,
    detail: str | None,
) -> None:
    conn.execute(send_attempts.insert(), [_attempt_row(c, started, now, outcome, status, detail)])


def _outbox_after_attempt(conn: Connection, c: Claimed, started: datetime, **values: Any) -> None:
    conn.execute(
        update(outbox)
        .where(outbox.c.message_id == c.message_id)
        .values(
            attempts=c.attempts + 1,
            first_attempt_at=c.first_attempt_at or started,
            lease_owner=None,
            lease_until=None,
            **values,
        )
    )


def record_accepted(
    conn: Connection, c: Claimed, message_uuid: str, started: datetime, now: datetime
) -> None:
    """Plivo queued it: store the UUID (adopting a placeholder a fast callback made)."""
    begin_status_writes(conn)
    _attempt(conn, c, started, now, "accepted", 202, message_uuid)
    _outbox_after_attempt(conn, c, started, state="done", last_error=None)
    merged = adopt_placeholder(conn, c.message_id, message_uuid, now)
    # 202 means "queued at Plivo": move `accepted` forward unless callbacks already did more.
    current = conn.execute(
        select(messages.c.status).where(messages.c.id == c.message_id)
    ).scalar_one()
    if RANK[MessageStatus(current)] < RANK[MessageStatus.QUEUED]:
        conn.execute(
            update(messages)
            .where(messages.c.id == c.message_id)
            .values(status=MessageStatus.QUEUED.value, updated_at=now)
        )
        current = MessageStatus.QUEUED.value
    # A fast callback's placeholder may have brought the status further already.
    detail: dict[str, Any] = {"message_uuid": message_uuid}
    if merged is not None:
        detail["merged_from"] = merged  # the placeholder's id: clients drop that message
    change = LocalChange(c.message_id, current, MessageStatus.ACCEPTED, detail)
    insert_local_events(conn, [change], now)


def record_accepted_many(
    conn: Connection, accepted: list[tuple[Claimed, str, datetime]], now: datetime
) -> None:
    """`record_accepted` for a whole pass in a few statements. UUIDs that a fast callback already
    holds as a placeholder (rare) go through the one-by-one adoption."""
    if not accepted:
        return
    begin_status_writes(conn)
    claim_rows = [uuid_claim(uuid, now) for _, uuid, _ in sorted(accepted, key=lambda a: a[1])]
    stmt = insert_ignore(conn.dialect, messages, ["message_uuid"]).returning(
        messages.c.message_uuid
    )
    ours = set(conn.execute(stmt, claim_rows).scalars())
    fast = [a for a in accepted if a[1] not in ours]
    plain = [a for a in accepted if a[1] in ours]
    for item, uuid, started in fast:
        record_accepted(conn, item, uuid, started, now)
    if not plain:
        return
    conn.execute(messages.delete().where(messages.c.message_uuid.in_([u for _, u, _ in plain])))
    conn.execute(
        update(messages)
        .where(messages.c.id == bindparam("_id"))
        .values(message_uuid=bindparam("_uuid"), status=MessageStatus.QUEUED.value, updated_at=now),
        [{"_id": c.message_id, "_uuid": uuid} for c, uuid, _ in plain],
    )
    conn.execute(
        send_attempts.insert(),
        [_attempt_row(c, started, now, "accepted", 202, uuid) for c, uuid, started in plain],
    )
    queued = [
        LocalChange(c.message_id, MessageStatus.QUEUED, MessageStatus.ACCEPTED, {"message_uuid": u})
        for c, u, _ in plain
    ]
    insert_local_events(conn, queued, now)
    conn.execute(
        update(outbox)
        .where(outbox.c.message_id == bindparam("_id"))
        .values(
            attempts=bindparam("_attempts"),
            first_attempt_at=bindparam("_first"),
            state="done",
            last_error=None,
            lease_owner=None,
            lease_until=None,
        ),
        [
            {
                "_id": c.message_id,
                "_attempts": c.attempts + 1,
                "_first": c.first_attempt_at or started,
            }
            for c, _, started in plain
        ],
    )


def record_retry(
    conn: Connection,
    c: Claimed,
    started: datetime,
    now: datetime,
    delay: float,
    status: int | None,
    detail: str,
) -> None:
    _attempt(conn, c, started, now, "retry", status, detail)
    _outbox_after_attempt(
        conn,
        c,
        started,
        state="pending",
        next_attempt_at=now + timedelta(seconds=delay),
        last_error=detail,
    )


def record_failed(
    conn: Connection, c: Claimed, started: datetime, now: datetime, status: int | None, detail: str
) -> None:
    """Permanent: the message is failed with the reason (it never reached a carrier)."""
    begin_status_writes(conn)
    _attempt(conn, c, started, now, "failed", status, detail)
    _outbox_after_attempt(conn, c, started, state="failed", last_error=detail)
    result = conn.execute(
        update(messages)
        .where(messages.c.id == c.message_id, messages.c.status == MessageStatus.ACCEPTED.value)
        .values(status=MessageStatus.FAILED.value, error_detail=detail, updated_at=now)
    )
    if result.rowcount:
        change = LocalChange(
            c.message_id, MessageStatus.FAILED, MessageStatus.ACCEPTED, {"detail": detail}
        )
        insert_local_events(conn, [change], now)


def record_ambiguous(
    conn: Connection, c: Claimed, started: datetime, now: datetime, detail: str, grace: float
) -> None:
    """Outcome unknown: never resend blindly; the reconciler looks it up after `grace` s."""
    _attempt(conn, c, started, now, "ambiguous", None, detail)
    _outbox_after_attempt(
        conn,
        c,
        started,
        state="reconcile",
        next_attempt_at=now + timedelta(seconds=grace),
        last_error=detail,
    )


def record_not_found(conn: Connection, c: Claimed, now: datetime) -> None:
    """Reconciled: Plivo has no such message, so nothing was sent; it may be sent again."""
    _attempt(conn, c, now, now, "not_found", None, "no matching message at Plivo")
    conn.execute(
        update(outbox)
        .where(outbox.c.message_id == c.message_id)
        .values(state="pending", next_attempt_at=now, lease_owner=None, lease_until=None)
    )


def known_uuids(conn: Connection, uuids: list[str]) -> set[str]:
    """Which of these MessageUUIDs already belong to a message we sent."""
    if not uuids:
        return set()
    rows = conn.execute(
        select(messages.c.message_uuid).where(
            messages.c.message_uuid.in_(uuids), messages.c.origin == "api"
        )
    )
    return set(rows.scalars())


def expire_leases(conn: Connection, now: datetime) -> None:
    """A worker died holding leases: what it was sending may have reached Plivo, so those
    messages are reconciled, never resent blindly; interrupted reconciliations start over."""
    conn.execute(
        update(outbox)
        .where(outbox.c.state.in_(("sending", "reconciling")), outbox.c.lease_until < now)
        .values(state="reconcile", next_attempt_at=now, lease_owner=None, lease_until=None)
    )


def take_shared_tokens(conn: Connection, name: str, rate: float, now: float, want: float) -> float:
    """Token bucket kept in a row (several dispatcher processes): returns seconds to wait,
    0.0 when the tokens were taken. The row lock serialises workers."""
    from plivo_tracker.outbound.ratelimit import Bucket, TokenBucket

    bucket = TokenBucket(rate=rate, capacity=max(1.0, rate))
    conn.execute(
        insert_ignore(conn.dialect, rate_limits, ["name"]),
        [{"name": name, "tokens": bucket.capacity, "updated": now}],
    )
    row = conn.execute(
        lock_for_update(
            conn.dialect,
            select(rate_limits.c.tokens, rate_limits.c.updated).where(rate_limits.c.name == name),
        )
    ).one()
    state, wait = bucket.take(Bucket(row.tokens, row.updated), now, want)
    conn.execute(
        update(rate_limits)
        .where(rate_limits.c.name == name)
        .values(tokens=state.tokens, updated=state.updated)
    )
    return wait


def outbox_counts(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(outbox.c.state, func.count()).group_by(outbox.c.state))
    return {state: int(n) for state, n in rows}
