"""The projector: the only code that applies status reports — callbacks and the sweeper's
lookups — to messages (docs/adr/0011; our own send outcomes are still written by
outbound/repository.py, see the ADR's "Not yet").

The acknowledgement only appends reports to the journal (inbound/journal.py). The projector
reads the journal after its cursor, in id order (= commit order), and applies a batch in one
transaction: placeholder messages for UUIDs not seen yet, parts, the status decision of every
report through the pure status machine (`status.decide`, `status.rollup`), the event rows, the
message and part rows, re-sends of failed messages, erasure of settled texts — and moves its
cursor in the same transaction. A crash at any point loses nothing: the cursor moves only with
what it applied, so the next pass starts where the last committed one ended.

Decisions run report by report in journal order over snapshots of the rows, so the result does
not depend on how the journal is cut into batches (tests/integration/test_projector.py).
One pass at a time across processes: the pass locks the cursor row. Leadership
(composition.py) only keeps the other processes from queueing on that lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Connection

from plivo_tracker import metrics
from plivo_tracker.db.engine import DatabaseUnavailable, Reader, Writer
from plivo_tracker.inbound import repository as journal_repo
from plivo_tracker.inbound.journal import payload_fields
from plivo_tracker.messages import local_changes
from plivo_tracker.messages import writes as repo
from plivo_tracker.messages.inbound_messages import apply_inbound
from plivo_tracker.messages.projection import (
    Applier,
    Change,
    InboundHook,
    PassOptions,
    Projection,
    Resender,
)
from plivo_tracker.messages.rollups import Deltas
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
from plivo_tracker.messages.writes import Row
from plivo_tracker.plivo.callback import CallbackEvent, UnparseableCallback, parse_callback
from plivo_tracker.plivo.inbound import KIND as INBOUND_KIND
from plivo_tracker.retention.content import erase_unneeded
from plivo_tracker.retention.rules import FINAL, Erasure

log = structlog.get_logger(__name__)

BATCH = 1000  # journal rows per pass: bounds how long an append waits for the writer
# After a wake, let appends gather this long before a pass: passes of tens of reports instead of
# one per group commit (each pass is a durable COMMIT on the writer the appends also need).
GATHER = 0.02
SET_ASIDE_AFTER = 3  # single-row passes that fail before that row is set aside


@dataclass(frozen=True, slots=True)
class Report:
    """One journal row, parsed again: what the projector applies."""

    journal_id: int
    event: CallbackEvent
    received_at: datetime
    source: str
    method: str | None
    nonce: str | None
    scheme: str | None
    payload: str
    headers: str | None


@dataclass(slots=True)
class _Plan:
    """The effect of each report, computed in memory over snapshots of the rows."""

    effects: dict[int, tuple[Effect, str | None, str]]  # report index → effect, prev, new status
    messages: dict[str, Row]
    parts: dict[int, dict[str, Row]]
    changed_messages: set[str]
    changed_parts: set[str]


def to_report(row: dict[str, Any]) -> Report | None:
    """A journal row as a report; None for one that no longer parses (logged, skipped: it was
    parsed once already, when it was acknowledged)."""
    try:
        event = parse_callback(payload_fields(row["payload"]))
    except (UnparseableCallback, ValueError) as exc:
        log.error("projector.unparseable_row", journal_id=row["id"], error=str(exc))
        return None
    return Report(
        journal_id=row["id"],
        event=event,
        received_at=row["received_at"],
        source=row["source"],
        method=row["method"],
        nonce=row["nonce"],
        scheme=row["signature_scheme"],
        payload=row["payload"],
        headers=row["headers"],
    )


def project_pending(
    conn: Connection,
    now: datetime,
    *,
    limit: int = BATCH,
    resend: Resender | None = None,
    erasure: Erasure | None = None,
    on_inbound: InboundHook | None = None,
) -> Projection:
    """One pass: apply up to `limit` journal rows after the cursor and move it past them."""
    cursor = journal_repo.lock_cursor(conn)
    rows = journal_repo.journal_after(conn, cursor, limit)
    if not rows:
        return Projection(position=cursor)
    # Only now: an empty pass must not wake every live feed (the lock queues a NOTIFY).
    repo.begin_status_writes(conn)
    result = Projection()
    # Consecutive rows of one kind are applied together, runs in journal order: what a row does
    # never depends on a later row, so the result is the same however the journal is cut.
    options = PassOptions(resend, erasure, on_inbound)  # and the pass's rollup deltas
    for kind, run in _runs(rows):
        result.changes += APPLIERS[kind](conn, run, now, options).changes
    # A message of ours that became failed/undelivered with a code the resend policy resends
    # gets another attempt; with `erasure` (STORE_MESSAGE_TEXT=false) one whose status became
    # final loses its text, after any resend copied it. Both in this transaction.
    if resend is not None:
        again = sorted(
            {
                (c.message_id, c.error_code)
                for c in result.changes
                if c.status in FAILURES and c.error_code is not None
            }
        )
        if again:
            result.resent = resend(conn, again, now)
    if erasure is not None:
        final = [c.message_id for c in result.changes if c.status in FINAL]
        erase_unneeded(conn, final, now, erasure)
    options.deltas.flush(conn)
    result.applied = len(rows)
    result.received = [row["received_at"] for row in rows]
    result.position = int(rows[-1]["id"])
    journal_repo.move_cursor(conn, result.position, now)
    return result


def _runs(rows: Sequence[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The rows in runs of one kind (KINDS[source]), in journal order."""
    runs: list[tuple[str, list[dict[str, Any]]]] = []
    for row in rows:
        kind = KINDS.get(row["source"], "report")
        if runs and runs[-1][0] == kind:
            runs[-1][1].append(row)
        else:
            runs.append((kind, [row]))
    return runs


def _apply_report_rows(
    conn: Connection, rows: Sequence[dict[str, Any]], now: datetime, options: PassOptions
) -> Projection:
    reports = [r for r in (to_report(row) for row in rows) if r is not None]
    return apply_reports(conn, reports, now, options.deltas)


# journal.source → kind: Plivo's status reports (callbacks, the sweeper's lookups).
# Our own changes (a send stored, accepted or refused, …): messages/local_changes.py.
# Messages sent to our numbers (/plivo/inbound): messages/inbound_messages.py.
KINDS: dict[str, str] = {
    "callback": "report",
    "reconcile": "report",
    local_changes.SOURCE: "local",
    INBOUND_KIND: "inbound",
}
APPLIERS: dict[str, Applier] = {
    "report": _apply_report_rows,
    "local": local_changes.apply_local_rows,
    "inbound": apply_inbound,
}


def _placeholder(ev: CallbackEvent, now: datetime) -> dict[str, Any]:
    return {
        "message_uuid": ev.message_key,
        "origin": "callback",
        "direction": "outbound",
        "status": ev.status.value,  # overwritten by the first report's decision below
        "to_number": ev.to,
        "from_number": ev.from_,
        "type": ev.type,
        "has_conflict": False,
        "created_at": now,
        "updated_at": now,
    }


def apply_reports(
    conn: Connection, reports: Sequence[Report], now: datetime, deltas: Deltas | None = None
) -> Projection:
    """Apply reports, in order, to their messages: placeholders, parts, decisions, events;
    with `deltas`, what that does to the statistics is noted there."""
    if not reports:
        return Projection()
    events = {i: r.event for i, r in enumerate(reports)}
    todo = list(events)

    # Messages (placeholders for UUIDs not seen yet) and parts, locked for this transaction.
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

    # Decide every report's effect, insert the events, and correct the plan in the rare case
    # that an event was already stored before the journal existed (the same report stored by
    # the request itself, before migration 0007).
    plan = _plan(todo, events, msgs, parts, created, created_parts, now)
    inserted = repo.insert_events(conn, [_event_row(reports[i], msgs, plan, i) for i in todo])
    if len(inserted) != len(todo):
        stored = [i for i in todo if events[i].dedupe_key in inserted]
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

    if deltas is not None:
        for key in plan.changed_messages:
            if key not in created:  # a placeholder made now was not counted yet
                deltas.remove(msgs[key].values)
            deltas.add(plan.messages[key].values)

    result = Projection()
    for i in todo:
        _, previous, status = plan.effects[i]
        if status != previous:
            m = plan.messages[events[i].message_key]
            result.changes.append(Change(m.id, status, m.values["error_code"]))
    return result


def _event_row(report: Report, msgs: dict[str, Row], plan: _Plan, i: int) -> dict[str, Any]:
    ev = report.event
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
        "source": report.source,
        "nonce": report.nonce,
        "signature_scheme": report.scheme,
        "method": report.method,
        "plivo_time": ev.event_time,
        "received_at": report.received_at,
        "payload": report.payload,
        "headers": report.headers,
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
    # Only parts with a status of their own: a part row created for a later report of this
    # pass has none yet (else the result would depend on how the journal is cut into passes).
    known = [p for u, p in parts[message.id].items() if u not in blank_parts]
    statuses = [MessageStatus(p.values["status"]) for p in known]
    parent_current = None if previous is None else MessageStatus(previous)
    new_status = rollup(parent_current, statuses, mv["part_count"]) or decision.status
    if new_status in FAILURES:
        failing = [p for p in known if p.values["status"] == new_status.value]
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


class Projector:
    """Applies the journal in the background, a pass at a time on the process's writer.

    Woken by this process's appends (`wake`), by NOTIFY from other processes' appends on
    PostgreSQL, and every `poll_interval` by a cheap read of the journal's head (other
    processes on SQLite). `settled()` waits until everything journaled before the call is
    applied: what a reader that must see its own callback uses (the tests' "until projected").
    """

    def __init__(
        self,
        writer: Writer,
        reader: Reader,
        *,
        resend: Resender | None = None,
        erasure: Erasure | None = None,
        on_inbound: InboundHook | None = None,
        on_resend: Callable[[], None] | None = None,
        batch: int = BATCH,
        poll_interval: float = 0.25,
        gather: float = GATHER,
    ) -> None:
        self._writer = writer
        self._reader = reader
        self._resend = resend
        self._erasure = erasure
        self._on_inbound = on_inbound
        self._on_resend = on_resend
        self.batch = batch
        self.poll_interval = poll_interval
        self.gather = gather
        self.position = 0  # the cursor after this process's last pass
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()  # ends the wait at once

    async def run(self) -> None:
        """Pass after pass until `stop()`; a failing pass (database down) is logged and tried
        again on the next wake or poll: nothing is lost, the cursor did not move. Once `run()`
        has returned it may be run again (a leader that lost and regained its lease)."""
        try:
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)
                woken = self._wake.is_set()
                self._wake.clear()
                if self._stopping.is_set():
                    break
                await self._pass(woken)
        finally:
            self._stopping.clear()  # this stop is spent: a later run() runs

    async def _pass(self, woken: bool) -> None:
        try:
            if woken or await self._behind():
                if woken and self.gather:
                    await asyncio.sleep(self.gather)
                    self._wake.clear()  # the appends of the gather are in this pass
                await self.drain()
        except Exception as exc:  # noqa: BLE001 - the loop outlives an outage
            log.warning("projector.pass_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.poll_interval)

    async def drain(self) -> int:
        """Passes until the journal is applied; returns the rows applied.

        A pass that fails for another reason than an unreachable database is retried row by
        row, so one row the database refuses (a bug, a constraint) cannot hold every later
        report back: a row that fails alone, several times, is set aside in the quarantine
        with the error (logged and counted; its journal row stays) and the cursor moves on."""
        total = 0
        while True:
            try:
                result = await self.project_once()
            except DatabaseUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - find the row that fails
                log.warning("projector.batch_failed", error=repr(exc))
                result = await self._one_row()
            total += result.applied
            if result.applied < self.batch and not result.partial:
                return total

    async def _one_row(self) -> Projection:
        error: Exception | None = None
        for attempt in range(SET_ASIDE_AFTER):
            try:
                result = await self.project_once(limit=1)
            except DatabaseUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001
                error = exc
                await asyncio.sleep(0.05 * (attempt + 1))
            else:
                result.partial = True  # more rows may follow: go on with full passes
                return result
        assert error is not None
        now = datetime.now(UTC)
        set_aside = await self._writer.run(
            lambda conn: journal_repo.set_aside_next(conn, f"projection failed: {error!r}", now)
        )
        journal_id, source = set_aside or (None, None)
        log.error("projector.row_set_aside", journal_id=journal_id, error=repr(error))
        # An inbound message is counted apart from the status reports (and our own changes).
        counter = metrics.INBOUND if source == INBOUND_KIND else metrics.CALLBACKS
        counter.labels(outcome="set_aside").inc()
        return Projection(applied=1, partial=True)

    async def project_once(self, limit: int | None = None) -> Projection:
        started = time.perf_counter()
        now = datetime.now(UTC)
        batch = limit or self.batch

        def work(conn: Connection) -> Projection:
            return project_pending(
                conn,
                now,
                limit=batch,
                resend=self._resend,
                erasure=self._erasure,
                on_inbound=self._on_inbound,
            )

        # On SQLite the pass's statements run on the event loop like the appends' (only COMMIT
        # goes to the writer's thread): measured faster than the whole pass on that thread,
        # where it fought the loop for the GIL (docs/benchmarks.md).
        result = await self._writer.run(work)
        self.position = result.position
        if result.applied:
            metrics.PROJECTED.inc(result.applied)
            metrics.PROJECTION_SECONDS.observe(time.perf_counter() - started)
            committed = datetime.now(UTC)
            for at in result.received:
                metrics.PROJECTION_LAG.observe((committed - at).total_seconds())
        if result.resent and self._on_resend is not None:
            self._on_resend()  # wake the dispatcher: new outbox rows are due
        return result

    async def _behind(self) -> bool:
        cursor, head = await self._reader.run(journal_repo.projection_state)
        self.position = cursor
        return head > cursor

    async def settled(self, within: float = 10.0) -> None:
        """Wait until every report journaled before this call is applied (by any process)."""
        _, head = await self._reader.run(journal_repo.projection_state)
        deadline = time.monotonic() + within
        while True:
            cursor, _ = await self._reader.run(journal_repo.projection_state)
            if cursor >= head:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"journal applied up to {cursor}, not yet {head}")
            self.wake()
            await asyncio.sleep(0.005)
