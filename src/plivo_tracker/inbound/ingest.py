"""One batch's work inside one transaction: nonces, quarantine, placeholders, events, statuses.

The caller (the group committer) opens the transaction and commits it; nothing here commits.
Synchronous on purpose: the whole batch runs in one go on the database writer (see db/engine.py).
Events and the statuses they produce are written in the same transaction, so after a crash the
history and the current status still agree.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection

from plivo_tracker.messages import repository as repo
from plivo_tracker.messages.repository import Row
from plivo_tracker.messages.status import (
    FAILURES,
    RANK,
    Effect,
    MessageStatus,
    State,
    decide,
    parse_part_info,
    rollup,
)
from plivo_tracker.outbound import repository as outbound_repo
from plivo_tracker.outbound.resend import ResendPolicy
from plivo_tracker.plivo.callback import CallbackEvent, UnparseableCallback, parse_callback
from plivo_tracker.retention.content import erase_unneeded
from plivo_tracker.retention.rules import FINAL, Erasure


class Outcome(StrEnum):
    STORED = "stored"  # a new event, committed
    DUPLICATE = "duplicate"  # same (MessageUUID, Status, Sequence) as a stored event
    REPLAY = "replay"  # a nonce already committed: the same signed request again
    QUARANTINED = "quarantined"  # signed but unparseable: kept raw


@dataclass(frozen=True, slots=True)
class CallbackItem:
    """A verified request, ready to store. `event` is None when it could not be parsed.

    `nonce` is the nonce of the scheme that verified (kept with the event); `nonces` is every
    nonce the request carried, `nonce` included: all are recorded, and any one seen before
    makes the request a replay.
    """

    received_at: datetime
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    fields: dict[str, list[str]]
    nonce: str | None
    scheme: str | None
    event: CallbackEvent | None
    reason: str | None = None
    source: str = "callback"  # "reconcile": the sweeper's Get Message, applied the same way
    nonces: tuple[str, ...] = ()


def make_item(
    *,
    received_at: datetime,
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
    fields: dict[str, list[str]] | None,
    nonce: str | None,
    scheme: str | None,
    reason: str | None = None,
    source: str = "callback",
    nonces: Sequence[str] = (),
) -> CallbackItem:
    """Build an item, parsing the fields; a payload that does not parse is kept for quarantine.

    `nonces`: every nonce of the request; `nonce` is added when missing from it."""
    all_nonces = tuple(nonces)
    if nonce is not None and nonce not in all_nonces:
        all_nonces = (nonce, *all_nonces)
    event: CallbackEvent | None = None
    if fields is not None and reason is None:
        try:
            event = parse_callback(fields)
        except UnparseableCallback as exc:
            reason = str(exc)
    return CallbackItem(
        received_at=received_at,
        method=method,
        path=path,
        query=query,
        headers=headers,
        body=body,
        fields=fields or {},
        nonce=nonce,
        scheme=scheme,
        event=event,
        reason=reason,
        source=source,
        nonces=all_nonces,
    )


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A committed status change of a message, for the live stream and metrics."""

    event_id: int
    message_id: int
    message_uuid: str | None
    status: str
    previous_status: str | None
    error_code: str | None
    at: datetime


@dataclass(slots=True)
class BatchResult:
    outcomes: list[Outcome]
    changes: list[StatusChange] = field(default_factory=list)
    resent: list[int] = field(default_factory=list)  # new message ids queued for another attempt


@dataclass(slots=True)
class _Plan:
    """The effect of each new event, computed in memory over snapshots of the rows."""

    effects: dict[int, tuple[Effect, str | None, str]]  # item index → effect, prev, new status
    messages: dict[str, Row]
    parts: dict[int, dict[str, Row]]
    changed_messages: set[str]
    changed_parts: set[str]


def _payload(fields: dict[str, list[str]]) -> str:
    flat = {k: v[0] if len(v) == 1 else v for k, v in fields.items()}
    return json.dumps(flat, ensure_ascii=False, sort_keys=True)


def _placeholder(ev: CallbackEvent, now: datetime) -> dict[str, Any]:
    return {
        "message_uuid": ev.message_key,
        "origin": "callback",
        "direction": "outbound",
        "status": ev.status.value,  # overwritten by the first event's decision below
        "to_number": ev.to,
        "from_number": ev.from_,
        "type": ev.type,
        "has_conflict": False,
        "created_at": now,
        "updated_at": now,
    }


def ingest_batch(
    conn: Connection,
    items: list[CallbackItem],
    now: datetime,
    resend: ResendPolicy | None = None,
    erasure: Erasure | None = None,
) -> BatchResult:
    """Store a batch of verified callbacks and apply their statuses; return per-item outcomes.

    A message of ours that becomes failed/undelivered with a code the `resend` policy resends
    gets another attempt queued in the same transaction. With `erasure` (STORE_MESSAGE_TEXT=
    false), a message of ours whose status became final loses its text in it too, after any
    resend copied it."""
    outcomes: list[Outcome | None] = [None] * len(items)
    repo.begin_status_writes(conn)

    # 1. Nonces: a request with any nonce committed before (or earlier in this batch) is a
    #    replay: 200, no change. Every nonce of every item is recorded, a replay's too, so a
    #    captured request stripped of one signature family replays nothing either.
    first_by_nonce: dict[str, int] = {}
    for i, it in enumerate(items):
        for nonce in it.nonces:
            if first_by_nonce.setdefault(nonce, i) != i:
                outcomes[i] = Outcome.REPLAY
    fresh = repo.insert_new_nonces(conn, list(first_by_nonce), now)
    if len(fresh) != len(first_by_nonce):
        for nonce, i in first_by_nonce.items():
            if nonce not in fresh:
                outcomes[i] = Outcome.REPLAY

    # 2. Unparseable but authentic: keep raw.
    quarantined = [i for i, it in enumerate(items) if outcomes[i] is None and it.event is None]
    repo.insert_quarantine(
        conn,
        [
            {
                "received_at": items[i].received_at,
                "path": items[i].path,
                "method": items[i].method,
                "query": items[i].query,
                "headers": json.dumps(items[i].headers),
                "body": items[i].body,
                "reason": (items[i].reason or "unparseable")[:300],
                "nonce": items[i].nonce,
            }
            for i in quarantined
        ],
    )
    for i in quarantined:
        outcomes[i] = Outcome.QUARANTINED

    # 3. Duplicates inside the batch.
    seen: set[str] = set()
    todo: list[int] = []
    for i, it in enumerate(items):
        if outcomes[i] is not None or it.event is None:
            continue
        if it.event.dedupe_key in seen:
            outcomes[i] = Outcome.DUPLICATE
        else:
            seen.add(it.event.dedupe_key)
            todo.append(i)
    if not todo:
        return BatchResult([o or Outcome.DUPLICATE for o in outcomes])

    events = {i: _event(items[i]) for i in todo}

    # 4. Messages (placeholders for UUIDs not seen yet) and parts, locked for this transaction.
    placeholders: dict[str, dict[str, Any]] = {}
    for ev in events.values():
        placeholders.setdefault(ev.message_key, _placeholder(ev, now))
    created = repo.ensure_messages(conn, placeholders)
    msgs = repo.lock_messages_by_uuid(conn, placeholders)
    part_rows: list[dict[str, Any]] = [
        {
            "message_id": msgs[ev.message_key].id,
            "part_uuid": ev.message_uuid,
            "part_info": ev.part_info,
            "part_index": (parse_part_info(ev.part_info) or (None,))[0],
            "status": ev.status.value,
            "updated_at": now,
        }
        for ev in events.values()
        if ev.is_part
    ]
    created_parts = repo.ensure_parts(conn, part_rows)
    parts = repo.load_parts(conn, {r["message_id"] for r in part_rows})

    # 5. Decide every event's effect, insert the events, and correct the plan in the rare case
    #    that an event was already stored under another nonce (a Plivo retry with a new nonce).
    plan = _plan(todo, events, msgs, parts, created, created_parts, now)
    inserted = repo.insert_events(conn, [_event_row(items[i], msgs, plan, i) for i in todo])
    if len(inserted) != len(todo):
        stored = [i for i in todo if events[i].dedupe_key in inserted]
        for i in todo:
            if events[i].dedupe_key not in inserted:
                outcomes[i] = Outcome.DUPLICATE
        old = plan
        plan = _plan(stored, events, msgs, parts, created, created_parts, now)
        repo.update_event_effects(
            conn,
            [
                {
                    "_id": inserted[events[i].dedupe_key],
                    "effect": plan.effects[i][0].value,
                    "previous_status": plan.effects[i][1],
                    "message_status": plan.effects[i][2],
                }
                for i in stored
                if plan.effects[i] != old.effects[i]
            ],
        )
        todo = stored

    repo.update_messages(conn, [plan.messages[k] for k in sorted(plan.changed_messages)])
    repo.update_parts(
        conn,
        [p for ps in plan.parts.values() for u, p in ps.items() if u in plan.changed_parts],
    )

    changes: list[StatusChange] = []
    for i in todo:
        outcomes[i] = Outcome.STORED
        effect, previous, status = plan.effects[i]
        if status != previous:
            ev = events[i]
            m = plan.messages[ev.message_key]
            changes.append(
                StatusChange(
                    event_id=inserted[ev.dedupe_key],
                    message_id=m.id,
                    message_uuid=ev.message_key,
                    status=status,
                    previous_status=previous,
                    error_code=m.values["error_code"],
                    at=now,
                )
            )
    resent: list[int] = []
    if resend is not None and resend.codes:
        again = sorted(
            {
                (c.message_id, c.error_code)
                for c in changes
                if c.status in FAILURES and c.error_code in resend.codes
            }
        )
        if again:
            resent = outbound_repo.resend(conn, again, now, resend)
    if erasure is not None:
        erase_unneeded(conn, [c.message_id for c in changes if c.status in FINAL], now, erasure)
    return BatchResult([o or Outcome.DUPLICATE for o in outcomes], changes, resent)


def _event(item: CallbackItem) -> CallbackEvent:
    assert item.event is not None
    return item.event


def _event_row(item: CallbackItem, msgs: dict[str, Row], plan: _Plan, i: int) -> dict[str, Any]:
    ev = _event(item)
    effect, previous, message_status = plan.effects[i]
    return {
        "message_id": msgs[ev.message_key].id,
        "message_uuid": ev.message_uuid,
        "status": ev.status.value,
        "previous_status": previous,
        "message_status": message_status,
        "sequence": ev.sequence,
        "error_code": ev.error_code,
        "effect": effect.value,
        "dedupe_key": ev.dedupe_key,
        "source": item.source,
        "nonce": item.nonce,
        "signature_scheme": item.scheme,
        "method": item.method,
        "plivo_time": ev.event_time,
        "received_at": item.received_at,
        "payload": _payload(item.fields),
        "headers": json.dumps(item.headers),
    }


_FILL_INS = (
    ("to_number", "to"),
    ("from_number", "from_"),
    ("type", "type"),
    ("mcc", "mcc"),
    ("mnc", "mnc"),
)
_OURS = frozenset({"to_number", "from_number", "type"})
_BILLING = (("units", "units"), ("total_rate", "total_rate"), ("total_amount", "total_amount"))


def _plan(
    order: list[int],
    events: dict[int, CallbackEvent],
    msgs: dict[str, Row],
    parts: dict[int, dict[str, Row]],
    created: set[str],
    created_parts: set[str],
    now: datetime,
) -> _Plan:
    """Apply the status machine to snapshots of the rows, event by event, in arrival order."""
    # Row values are immutable scalars, so copying each dict is a full snapshot.
    m_snap = {k: Row(r.id, dict(r.values)) for k, r in msgs.items()}
    p_snap = {
        mid: {u: Row(r.id, dict(r.values)) for u, r in ps.items()} for mid, ps in parts.items()
    }
    blank_msgs, blank_parts = set(created), set(created_parts)  # no status of their own yet
    plan = _Plan({}, m_snap, p_snap, set(), set())
    for i in order:
        ev = events[i]
        m = m_snap[ev.message_key]
        mv = m.values
        previous = None if ev.message_key in blank_msgs else mv["status"]
        for col, attr in _FILL_INS + (() if ev.is_part else _BILLING):
            value = getattr(ev, attr)
            # Numbers we sent keep our E.164 form; callbacks only fill what we did not know.
            if value is not None and mv[col] != value and (mv[col] is None or col not in _OURS):
                mv[col] = value
                plan.changed_messages.add(ev.message_key)
        incoming = State(ev.status, ev.sequence, ev.event_time)
        # A part whose UUID is already another message's part (an incoherent callback: Plivo
        # never moves a part) has no row here: it counts for its parent like a plain status.
        if ev.is_part and ev.message_uuid in p_snap.get(m.id, {}):
            effect, new_status = _apply_part(ev, m, p_snap, blank_parts, previous, incoming, now)
            plan.changed_parts.add(ev.message_uuid)
        else:
            current = None if previous is None else _state(mv)
            decision = decide(current, incoming)
            effect, new_status = decision.effect, decision.status
            if decision.changed:
                mv["status_sequence"] = ev.sequence
                mv["status_at"] = ev.event_time
                mv["error_code"] = ev.error_code if new_status in FAILURES else None
            if decision.conflict:
                mv["has_conflict"] = True
        blank_msgs.discard(ev.message_key)
        if new_status != previous or ev.message_key in created:
            mv["status"] = new_status.value
            _stamp_times(mv, new_status, ev, now)
        mv["updated_at"] = now
        plan.changed_messages.add(ev.message_key)
        plan.effects[i] = (effect, previous, new_status.value)
    return plan


def _state(values: dict[str, Any]) -> State:
    return State(MessageStatus(values["status"]), values["status_sequence"], values["status_at"])


def _apply_part(
    ev: CallbackEvent,
    message: Row,
    parts: dict[int, dict[str, Row]],
    blank_parts: set[str],
    previous: str | None,
    incoming: State,
    now: datetime,
) -> tuple[Effect, MessageStatus]:
    """Apply an event to its part, then roll all parts up into the parent message."""
    part = parts[message.id][ev.message_uuid]
    pv = part.values
    current = None if ev.message_uuid in blank_parts else _state(pv)
    blank_parts.discard(ev.message_uuid)
    decision = decide(current, incoming)
    if decision.changed or current is None:
        pv.update(
            status=decision.status.value,
            status_sequence=ev.sequence,
            status_at=ev.event_time,
            error_code=ev.error_code if decision.status in FAILURES else None,
            updated_at=now,
        )
    mv = message.values
    info = parse_part_info(ev.part_info)
    if info is not None:
        mv["part_count"] = max(mv["part_count"] or 0, info[1])
    statuses = [MessageStatus(p.values["status"]) for p in parts[message.id].values()]
    parent_current = None if previous is None else MessageStatus(previous)
    new_status = rollup(parent_current, statuses, mv["part_count"]) or decision.status
    if new_status in FAILURES:
        failing = [p for p in parts[message.id].values() if p.values["status"] == new_status.value]
        if failing:
            mv["error_code"] = failing[0].values["error_code"]
    else:
        mv["error_code"] = None
    if decision.conflict:
        mv["has_conflict"] = True
    return decision.effect, new_status


def _stamp_times(
    mv: dict[str, Any], status: MessageStatus, ev: CallbackEvent, now: datetime
) -> None:
    if RANK[status] >= RANK[MessageStatus.SENT] and mv["sent_at"] is None:
        mv["sent_at"] = ev.sent_time or ev.event_time or now
    if status == MessageStatus.DELIVERED and mv["delivered_at"] is None:
        mv["delivered_at"] = ev.delivery_report_time or ev.event_time or now
