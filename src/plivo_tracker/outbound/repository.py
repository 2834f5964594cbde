"""All SQL of the sending flow: idempotency keys, outbox rows, claims, attempts, the shared bucket.

Synchronous functions on the database writer (see db/engine.py), like the callback batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Table, bindparam, func, or_, select, update

from plivo_tracker.db.dialect import (
    insert_ignore,
    lock_for_update,
    notify_outbox_sql,
    skip_locked,
)
from plivo_tracker.messages import local_changes
from plivo_tracker.messages.local_changes import LocalChange
from plivo_tracker.messages.models import (
    dispatch_state,
    idempotency_keys,
    leases,
    messages,
    outbox,
    rate_limits,
    send_attempts,
)
from plivo_tracker.messages.status import MessageStatus
from plivo_tracker.outbound.ratelimit import Bucket, TokenBucket, take_up_to
from plivo_tracker.outbound.resend import ResendPolicy

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


def _queue_message(
    conn: Connection, values: dict[str, Any], now: datetime, due: datetime | None = None
) -> int | None:
    """Insert a message of ours (status `accepted`) and its outbox row, due at `due` (now);
    returns its id, or None for a resend of a message that already has one (`attempt_of` is
    unique: two processes applying the same failure cannot both resend it)."""
    row = {
        "origin": "api",
        "direction": "outbound",
        "status": MessageStatus.ACCEPTED.value,
        "has_conflict": False,
        "created_at": now,
        "updated_at": now,
        **values,
    }
    if values.get("attempt_of"):
        stmt = insert_ignore(conn.dialect, messages, ["attempt_of"]).returning(messages.c.id)
        found = conn.execute(stmt, [row]).scalar_one_or_none()
        if found is None:
            return None
        message_id = int(found)
    else:
        message_id = int(
            conn.execute(messages.insert().returning(messages.c.id), [row]).scalar_one()
        )
    conn.execute(
        outbox.insert(),
        [
            {
                "message_id": message_id,
                "state": "pending",
                "next_attempt_at": due or now,
                "created_at": now,
            }
        ],
    )
    detail = {"attempt_of": values["attempt_of"]} if values.get("attempt_of") else {}
    born = LocalChange(message_id, MessageStatus.ACCEPTED, detail=detail)
    local_changes.journal(conn, [born], now)
    return message_id


def insert_outbound(conn: Connection, v: Validated, to: str, now: datetime) -> int:
    message_id = _queue_message(
        conn,
        {
            "to_number": to,
            "from_number": v.src,
            "type": v.type,
            "text": v.text,
            "media_urls": json.dumps(v.media_urls) if v.media_urls else None,
            "encoding": v.encoding,
            "segments": v.segments,
            "send_options": json.dumps(v.options) if v.options else None,
            "transactional": v.transactional,
        },
        now,
    )
    assert message_id is not None  # not a resend: always inserted
    return message_id


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
    segments: int | None = None
    lookups: int = 0
    created_at: datetime | None = None  # the message's: no attempt can be older
    options: dict[str, Any] | None = None  # Plivo send options (message_expiry, log, ...)
    transactional: bool = False  # its request asked for the opt-out exemption


def attempt_number(conn: Connection, message_id: int) -> int:
    """Which attempt of its chain a message is (1 = the original), following `attempt_of`."""
    n, current = 1, message_id
    while n < 100:
        previous = conn.execute(
            select(messages.c.attempt_of).where(messages.c.id == current)
        ).scalar_one_or_none()
        if previous is None:
            return n
        n, current = n + 1, int(previous)
    return n


def resend(
    conn: Connection,
    failures: Sequence[tuple[int, str | None]],
    now: datetime,
    policy: ResendPolicy,
) -> list[int]:
    """Queue another attempt of each of our messages that ended failed/undelivered with a code
    the policy resends: a new message (`attempt_of` = the failed one) due after the policy's
    backoff, while the chain is shorter than its limit. Returns the new message ids."""
    if not failures:
        return []
    codes = dict(failures)
    rows = conn.execute(
        select(messages)
        .where(messages.c.id.in_(list(codes)), messages.c.origin == "api")
        .order_by(messages.c.id)
    ).mappings()
    copied = (
        "to_number",
        "from_number",
        "type",
        "text",
        "media_urls",
        "encoding",
        "segments",
        "send_options",
        "transactional",
    )
    created: list[int] = []
    for m in list(rows):
        delay = policy.delay(codes[m["id"]], attempt_number(conn, m["id"]))
        if delay is None:
            continue
        values = {**{c: m[c] for c in copied}, "attempt_of": m["id"]}
        new_id = _queue_message(conn, values, now, now + timedelta(seconds=delay))
        if new_id is not None:
            created.append(new_id)
    if created:
        notify_outbox(conn)
    return created


def resender(
    policy: ResendPolicy,
) -> Callable[[Connection, Sequence[tuple[int, str]], datetime], list[int]] | None:
    """The projector's re-send hook for `policy` (None when it re-sends nothing): failures
    with a code the policy lists get another attempt, in the projector's transaction."""
    if not policy.codes:
        return None

    def queue(conn: Connection, failures: Sequence[tuple[int, str]], now: datetime) -> list[int]:
        wanted = [(m, code) for m, code in failures if code in policy.codes]
        return resend(conn, wanted, now, policy) if wanted else []

    return queue


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
            messages.c.segments,
            outbox.c.lookups,
            messages.c.created_at,
            messages.c.send_options,
            messages.c.transactional,
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
            r.segments,
            r.lookups,
            r.created_at,
            json.loads(r.send_options) if r.send_options else None,
            bool(r.transactional),
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
    api_id: str | None = None,
    attempt: int | None = None,
) -> dict[str, Any]:
    return {
        "message_id": c.message_id,
        "attempt": c.attempts + 1 if attempt is None else attempt,
        "started_at": started,
        "finished_at": now,
        "outcome": outcome,
        "http_status": status,
        "detail": detail,
        "api_id": api_id,
    }


def _attempt(
    conn: Connection,
    c: Claimed,
    started: datetime,
    now: datetime,
    outcome: str,
    status: int | None,
    detail: str | None,
    api_id: str | None = None,
    attempt: int | None = None,
) -> None:
    row = _attempt_row(c, started, now, outcome, status, detail, api_id, attempt)
    conn.execute(send_attempts.insert(), [row])


def still_sending(conn: Connection, message_ids: list[int], owner: str) -> set[int]:
    """Of `message_ids`, those still leased to `owner` for sending (locked until the commit):
    the only ones a pass may record. A pass recorded again after a commit whose answer was lost,
    or after its lease ran out and the row went to a lookup, changes nothing."""
    if not message_ids:
        return set()
    mine = lock_for_update(
        conn.dialect,
        select(outbox.c.message_id).where(
            outbox.c.message_id.in_(message_ids),
            outbox.c.state == "sending",
            outbox.c.lease_owner == owner,
        ),
    )
    return set(conn.execute(mine).scalars())


def _release(conn: Connection, message_id: int, **values: Any) -> None:
    """Update a message's outbox row and give up its lease (the attempt or lookup is over)."""
    conn.execute(
        update(outbox)
        .where(outbox.c.message_id == message_id)
        .values(lease_owner=None, lease_until=None, **values)
    )


def _outbox_after_attempt(conn: Connection, c: Claimed, started: datetime, **values: Any) -> None:
    first = c.first_attempt_at or started
    _release(conn, c.message_id, attempts=c.attempts + 1, first_attempt_at=first, **values)


# Our own statuses may move a message on only from these (never over what Plivo told us).
_LOCAL = frozenset({MessageStatus.ACCEPTED, MessageStatus.UNKNOWN})
_NOT_SENT = frozenset({MessageStatus.ACCEPTED})


def _queued(c: Claimed, message_uuid: str) -> LocalChange:
    """Plivo queued it: the projector adopts the UUID (and a placeholder that a fast callback
    made for it) and moves `accepted` on unless callbacks already did more."""
    return LocalChange(c.message_id, MessageStatus.QUEUED, _LOCAL, {}, message_uuid=message_uuid)


def record_accepted(
    conn: Connection,
    c: Claimed,
    message_uuid: str,
    started: datetime,
    now: datetime,
    api_id: str | None = None,
    outcome: str = "accepted",
) -> None:
    """Plivo queued it: record the attempt and journal the UUID for the projector.

    `outcome` "reconciled" / "adopted": the UUID came from a lookup or an operator, not from a
    202 (the attempt row then records the lookup, not another send)."""
    if outcome == "accepted":
        _attempt(conn, c, started, now, outcome, 202, message_uuid, api_id)
        _outbox_after_attempt(conn, c, started, state="done", last_error=None)
    else:
        _attempt(conn, c, started, now, outcome, None, message_uuid, api_id, attempt=c.attempts)
        _release(conn, c.message_id, state="done", last_error=None)
    local_changes.journal(conn, [_queued(c, message_uuid)], now)


def record_accepted_many(
    conn: Connection, accepted: list[tuple[Claimed, str, datetime, str | None]], now: datetime
) -> None:
    """`record_accepted` for a whole pass in a few statements."""
    if not accepted:
        return
    conn.execute(
        send_attempts.insert(),
        [
            _attempt_row(c, started, now, "accepted", 202, uuid, api_id)
            for c, uuid, started, api_id in accepted
        ],
    )
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
            for c, _, started, _ in accepted
        ],
    )
    local_changes.journal(conn, [_queued(c, uuid) for c, uuid, _, _ in accepted], now)


def record_retry(
    conn: Connection,
    c: Claimed,
    started: datetime,
    now: datetime,
    delay: float,
    status: int | None,
    detail: str,
    api_id: str | None = None,
) -> None:
    _attempt(conn, c, started, now, "retry", status, detail, api_id)
    _outbox_after_attempt(
        conn,
        c,
        started,
        state="pending",
        next_attempt_at=now + timedelta(seconds=delay),
        last_error=detail,
    )


def record_paused(
    conn: Connection,
    c: Claimed,
    started: datetime,
    now: datetime,
    status: int | None,
    detail: str,
    api_id: str | None = None,
) -> None:
    """The account or API address was refused (401/403/404/405): nothing was sent and the
    message stays queued, its attempt not counted; dispatching is paused meanwhile."""
    _attempt(conn, c, started, now, "paused", status, detail, api_id, attempt=c.attempts)
    _release(conn, c.message_id, state="pending", next_attempt_at=now, last_error=detail)


def record_failed(
    conn: Connection,
    c: Claimed,
    started: datetime,
    now: datetime,
    status: int | None,
    detail: str,
    api_id: str | None = None,
) -> None:
    """Permanent: the message is failed with the reason (it never reached a carrier)."""
    _attempt(conn, c, started, now, "failed", status, detail, api_id)
    _outbox_after_attempt(conn, c, started, state="failed", last_error=detail)
    failed = LocalChange(
        c.message_id, MessageStatus.FAILED, _NOT_SENT, {"detail": detail}, error_detail=detail
    )
    local_changes.journal(conn, [failed], now)


def record_ambiguous(
    conn: Connection,
    c: Claimed,
    started: datetime,
    now: datetime,
    detail: str,
    grace: float,
    status: int | None = None,
    api_id: str | None = None,
) -> None:
    """Outcome unknown: never resend blindly; the reconciler looks it up after `grace` s."""
    _attempt(conn, c, started, now, "ambiguous", status, detail, api_id)
    _outbox_after_attempt(
        conn,
        c,
        started,
        state="reconcile",
        next_attempt_at=now + timedelta(seconds=grace),
        last_error=detail,
    )


def record_lookup_undecided(
    conn: Connection,
    c: Claimed,
    now: datetime,
    detail: str,
    retry_in: float | None,
    counted: bool = True,
) -> None:
    """A lookup that could not decide: ask again in `retry_in` s, or (None) give the message to
    an operator: status `unknown` with the reason, until `resolve` adopts a UUID or resends."""
    _attempt(conn, c, now, now, "undecided", None, detail, attempt=c.attempts)
    lookups = outbox.c.lookups + (1 if counted else 0)
    if retry_in is not None:
        due = now + timedelta(seconds=retry_in)
        _release(
            conn,
            c.message_id,
            state="reconcile",
            lookups=lookups,
            next_attempt_at=due,
            last_error=detail,
        )
        return
    _release(conn, c.message_id, state="unknown", lookups=lookups, last_error=detail)
    unknown = LocalChange(
        c.message_id,
        MessageStatus.UNKNOWN,
        _NOT_SENT,
        {"detail": detail, "resolve": "adopt a MessageUUID or resend"},
        error_detail=f"outcome unknown: {detail}",
    )
    local_changes.journal(conn, [unknown], now)


def record_not_found(conn: Connection, c: Claimed, now: datetime) -> None:
    """Reconciled: Plivo has no such message, so nothing was sent; it may be sent again."""
    _attempt(
        conn, c, now, now, "not_found", None, "no matching message at Plivo", attempt=c.attempts
    )
    _release(conn, c.message_id, state="pending", next_attempt_at=now, lookups=outbox.c.lookups + 1)


def owned_uuids(conn: Connection, uuids: list[str], except_id: int) -> set[str]:
    """Which of these MessageUUIDs already belong to another message we sent, or are about to
    (its adoption journaled, not yet applied)."""
    if not uuids:
        return set()
    rows = conn.execute(
        select(messages.c.message_uuid).where(
            messages.c.message_uuid.in_(uuids),
            messages.c.origin == "api",
            messages.c.id != except_id,
        )
    )
    return set(rows.scalars()) | local_changes.pending_adoptions(conn, uuids, except_id)


def last_ambiguous_at(conn: Connection, message_id: int) -> datetime | None:
    return conn.execute(
        select(func.max(send_attempts.c.finished_at)).where(
            send_attempts.c.message_id == message_id, send_attempts.c.outcome == "ambiguous"
        )
    ).scalar_one_or_none()


def expire_leases(conn: Connection, now: datetime) -> None:
    """A worker died holding leases: what it was sending may have reached Plivo, so those
    messages are reconciled, never resent blindly; interrupted reconciliations start over."""
    conn.execute(
        update(outbox)
        .where(outbox.c.state.in_(("sending", "reconciling")), outbox.c.lease_until < now)
        .values(state="reconcile", next_attempt_at=now, lease_owner=None, lease_until=None)
    )


def bucket_rows(buckets: Sequence[tuple[str, float, float]], now: float) -> list[dict[str, Any]]:
    """The rows of full shared buckets `(name, rate, capacity)`."""
    return [{"name": name, "tokens": capacity, "updated": now} for name, _, capacity in buckets]


def make_buckets(conn: Connection, buckets: Sequence[tuple[str, float, float]], now: float) -> None:
    """The shared buckets' rows, full, unless they exist (its own transaction: `ensure_rows`)."""
    ensure_rows(conn, rate_limits, bucket_rows(buckets, now))


def take_shared_tokens(
    conn: Connection, buckets: Sequence[tuple[str, float, float]], now: float, want: int = 1
) -> tuple[int, float]:
    """Take up to `want` tokens from each bucket `(name, rate, capacity)`, kept in rows shared
    by every process: (how many, seconds until the next token when fewer were there). The row
    locks serialise workers; rows are locked in name order (no deadlock). The rows are made
    beforehand, in a transaction of their own (`bucket_rows`, see `ensure_rows`); one still
    missing (emptied tables) is made here."""
    ordered = sorted(buckets)
    lock = lock_for_update(
        conn.dialect,
        select(rate_limits.c.name, rate_limits.c.tokens, rate_limits.c.updated)
        .where(rate_limits.c.name.in_([b[0] for b in ordered]))
        .order_by(rate_limits.c.name),
    )
    rows = {r.name: r for r in conn.execute(lock)}
    if len(rows) < len(ordered):
        ensure_rows(conn, rate_limits, bucket_rows(ordered, now))
        rows = {r.name: r for r in conn.execute(lock)}
    states = [
        (TokenBucket(rate=rate, capacity=capacity), Bucket(rows[name].tokens, rows[name].updated))
        for name, rate, capacity in ordered
    ]
    got, after, wait = take_up_to(states, now, want)
    if got:
        conn.execute(
            update(rate_limits)
            .where(rate_limits.c.name == bindparam("_name"))
            .values(tokens=bindparam("_tokens"), updated=bindparam("_updated")),
            [
                {"_name": name, "_tokens": b.tokens, "_updated": b.updated}
                for (name, _, _), b in zip(ordered, after, strict=True)
            ],
        )
    return got, wait


# ---- the dispatch pause, shared by every worker ----------------------------------------------

DISPATCH = "dispatch"


@dataclass(frozen=True, slots=True)
class PauseState:
    paused: bool
    paused_by: str | None = None  # "auto" | "operator"
    reason: str | None = None
    since: datetime | None = None
    next_probe_at: datetime | None = None
    probes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "paused": self.paused,
            "paused_by": self.paused_by,
            "reason": self.reason,
            "since": self.since.isoformat() if self.since else None,
            "next_probe_at": self.next_probe_at.isoformat() if self.next_probe_at else None,
            "probes": self.probes,
        }


def pause_state(conn: Connection) -> PauseState:
    row = conn.execute(
        select(dispatch_state).where(dispatch_state.c.name == DISPATCH)
    ).one_or_none()
    if row is None or not row.paused:
        return PauseState(False)
    return PauseState(
        True, row.paused_by, row.reason, row.since, row.next_probe_at, int(row.probes)
    )


def set_paused(
    conn: Connection,
    *,
    by: str,
    reason: str,
    now: datetime,
    next_probe_at: datetime | None,
) -> bool:
    """Pause dispatching for every worker; returns True when it was not paused before (an
    operator's pause is never replaced by an automatic one)."""
    ensure_rows(
        conn, dispatch_state, [{"name": DISPATCH, "paused": False, "probes": 0, "updated_at": now}]
    )
    current = conn.execute(
        lock_for_update(
            conn.dialect,
            select(dispatch_state.c.paused, dispatch_state.c.paused_by).where(
                dispatch_state.c.name == DISPATCH
            ),
        )
    ).one()
    if current.paused and (current.paused_by == "operator" or by == "auto"):
        return False
    conn.execute(
        update(dispatch_state)
        .where(dispatch_state.c.name == DISPATCH)
        .values(
            paused=True,
            paused_by=by,
            reason=reason[:500],
            since=now,
            next_probe_at=next_probe_at,
            probes=0,
            updated_at=now,
        )
    )
    return True


def probe_failed(conn: Connection, now: datetime, next_probe_at: datetime, reason: str) -> None:
    conn.execute(
        update(dispatch_state)
        .where(dispatch_state.c.name == DISPATCH, dispatch_state.c.paused_by == "auto")
        .values(
            next_probe_at=next_probe_at,
            probes=dispatch_state.c.probes + 1,
            reason=reason[:500],
            updated_at=now,
        )
    )


def resume(conn: Connection, now: datetime, only_auto: bool = False) -> bool:
    """End the pause; `only_auto`: not an operator's (a probe that worked). True if it ended."""
    conditions = [dispatch_state.c.name == DISPATCH, dispatch_state.c.paused.is_(True)]
    if only_auto:
        conditions.append(dispatch_state.c.paused_by == "auto")
    result = conn.execute(
        update(dispatch_state)
        .where(*conditions)
        .values(
            paused=False,
            paused_by=None,
            reason=None,
            since=None,
            next_probe_at=None,
            probes=0,
            updated_at=now,
        )
    )
    if result.rowcount:
        notify_outbox(conn)
    return bool(result.rowcount)


# ---- operator resolution of `unknown` messages -----------------------------------------------


class ResolveError(ValueError):
    """The message cannot be resolved that way; `code` names why (not_found, not_unknown,
    uuid_taken)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _claimed_for(conn: Connection, message_id: int) -> Claimed:
    row = conn.execute(
        select(
            outbox.c.message_id,
            outbox.c.attempts,
            outbox.c.first_attempt_at,
            outbox.c.state,
            outbox.c.lookups,
            messages.c.to_number,
            messages.c.from_number,
            messages.c.text,
            messages.c.media_urls,
            messages.c.type,
            messages.c.segments,
        )
        .join(messages, messages.c.id == outbox.c.message_id)
        .where(outbox.c.message_id == message_id)
    ).one_or_none()
    if row is None:
        raise ResolveError("not_found", f"no message {message_id} of ours in the outbox")
    if row.state != "unknown":
        raise ResolveError(
            "not_unknown", f"message {message_id} is {row.state!r} in the outbox, not unknown"
        )
    return Claimed(
        row.message_id,
        row.attempts,
        row.first_attempt_at,
        row.to_number,
        row.from_number,
        row.text,
        json.loads(row.media_urls) if row.media_urls else None,
        row.type,
        row.segments,
        row.lookups,
    )


def resolve_adopt(conn: Connection, message_id: int, message_uuid: str, now: datetime) -> None:
    """An operator says which MDR this `unknown` message is: adopt its UUID (and a placeholder
    its callbacks made). Refused when another message of ours owns that UUID."""
    c = _claimed_for(conn, message_id)
    if owned_uuids(conn, [message_uuid], message_id):
        raise ResolveError("uuid_taken", f"{message_uuid} belongs to another message")
    record_accepted(conn, c, message_uuid, now, now, outcome="adopted")


def resolve_resend(conn: Connection, message_id: int, now: datetime) -> None:
    """An operator says nothing was sent: queue the message again (back to `accepted`)."""
    c = _claimed_for(conn, message_id)
    _attempt(conn, c, now, now, "resend", None, "operator: resend", attempt=c.attempts)
    conn.execute(
        update(outbox)
        .where(outbox.c.message_id == message_id)
        .values(state="pending", next_attempt_at=now, last_error=None, lookups=0)
    )
    again = LocalChange(
        message_id,
        MessageStatus.ACCEPTED,
        frozenset({MessageStatus.UNKNOWN}),
        {"resend": True},
        clear_error=True,
    )
    local_changes.journal(conn, [again], now)
    notify_outbox(conn)


def ensure_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Make the rows keyed by `name` that do not exist yet, before anything locks or updates
    them; best in a transaction of their own (`Leadership`, `Budget` do that once).

    Why it matters on MariaDB: an insert that meets an existing row takes the duplicate
    check's shared lock on it. Two transactions that hold it and then update the row both
    wait for the other's shared lock to go: a deadlock. Looking first takes no lock when the
    row exists; in a transaction of its own, the insert's lock ends at its COMMIT, before any
    update, however many processes make the same row at once."""
    names = [r["name"] for r in rows]
    have = set(conn.execute(select(table.c.name).where(table.c.name.in_(names))).scalars())
    missing = [r for r in rows if r["name"] not in have]
    if missing:
        conn.execute(insert_ignore(conn.dialect, table, ["name"]), missing)


# ---- leases and the sweeper ------------------------------------------------------------------


def lease_row(name: str) -> dict[str, Any]:
    return {"name": name, "owner": None, "until": None}


def make_lease(conn: Connection, name: str) -> None:
    """Lease `name`'s row, unless it exists (its own transaction: `ensure_rows`)."""
    ensure_rows(conn, leases, [lease_row(name)])


def take_lease(
    conn: Connection, name: str, owner: str, now: datetime, ttl: timedelta, renew: bool = True
) -> bool:
    """Become (or stay) the one holder of lease `name` for `ttl`; False while another holds it.

    `renew=False`: only once the lease has run out, even for its holder (a job due every `ttl`
    across processes, such as the purge, rather than a leader)."""
    ensure_rows(conn, leases, [lease_row(name)])
    free = or_(leases.c.until.is_(None), leases.c.until < now)
    result = conn.execute(
        update(leases)
        .where(leases.c.name == name, or_(leases.c.owner == owner, free) if renew else free)
        .values(owner=owner, until=now + ttl)
    )
    return bool(result.rowcount)


def release_lease(conn: Connection, name: str, owner: str) -> bool:
    """Give lease `name` up if `owner` holds it, so another process takes it at once; False
    when someone else holds it by now."""
    result = conn.execute(
        update(leases)
        .where(leases.c.name == name, leases.c.owner == owner)
        .values(owner=None, until=None)
    )
    return bool(result.rowcount)


@dataclass(frozen=True, slots=True)
class LeaseRow:
    name: str
    owner: str | None
    until: datetime | None


def lease_rows(conn: Connection, names: list[str]) -> list[LeaseRow]:
    """Who holds the leases `names` and until when (a row only once someone has asked)."""
    rows = conn.execute(
        select(leases.c.name, leases.c.owner, leases.c.until)
        .where(leases.c.name.in_(names))
        .order_by(leases.c.name)
    )
    return [LeaseRow(r.name, r.owner, r.until) for r in rows]


@dataclass(frozen=True, slots=True)
class Stuck:
    id: int
    message_uuid: str
    status: str
    created_at: datetime
    sent_at: datetime | None


STUCK_STATUSES = (MessageStatus.QUEUED.value, MessageStatus.SENT.value)


def claim_stuck(
    conn: Connection, now: datetime, stuck_before: datetime, limit: int, claim: bool = True
) -> list[Stuck]:
    """Messages of ours with a UUID, no final status, not settled, no change since
    `stuck_before`, and not looked up since then either; marked as looked up now (`claim`)."""
    stmt = (
        select(
            messages.c.id,
            messages.c.message_uuid,
            messages.c.status,
            messages.c.created_at,
            messages.c.sent_at,
        )
        .where(
            messages.c.origin == "api",
            messages.c.message_uuid.is_not(None),
            messages.c.status.in_(STUCK_STATUSES),
            messages.c.settled_reason.is_(None),
            messages.c.updated_at < stuck_before,
            or_(messages.c.swept_at.is_(None), messages.c.swept_at < stuck_before),
        )
        .order_by(messages.c.updated_at, messages.c.id)
        .limit(limit)
    )
    rows = list(conn.execute(skip_locked(conn.dialect, stmt) if claim else stmt))
    if claim and rows:
        conn.execute(
            update(messages).where(messages.c.id.in_([r.id for r in rows])).values(swept_at=now)
        )
    return [Stuck(r.id, r.message_uuid, r.status, r.created_at, r.sent_at) for r in rows]


def settle_no_receipt(conn: Connection, message_id: int, now: datetime) -> None:
    """Plivo still says `sent` long after: settled as "sent, no receipt" (status unchanged).

    Plivo's `sent` is in the journal in the same transaction, not yet applied: a message we
    still show as queued becomes sent when the projector applies it."""
    conn.execute(
        update(messages)
        .where(
            messages.c.id == message_id,
            messages.c.status.in_((MessageStatus.QUEUED.value, MessageStatus.SENT.value)),
        )
        .values(settled_reason="no_receipt", updated_at=now)
    )


def unsweep(conn: Connection, message_id: int) -> None:
    """A lookup that failed: the message is due for the next sweep again."""
    conn.execute(update(messages).where(messages.c.id == message_id).values(swept_at=None))
