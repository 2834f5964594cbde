"""Our own status changes, as journal rows, and how the projector applies them.

A message of ours changes status for reasons of our own: it is stored (`accepted`), Plivo
accepts it (`queued`, with its MessageUUID), refuses it for good (`failed`), no lookup can tell
whether it was sent (`unknown`), an operator sends it again (`accepted`). The code that learns it
(the API, the dispatcher, an operator) appends a journal row of source "local" in its own
transaction, beside the outbox change that goes with it; the projector applies it in journal
order with Plivo's reports, through `status.decide_local`. The projector is then the only
writer of statuses and status events, and the live stream shows them in one order
(docs/adr/0011).

Adopting a MessageUUID happens here too: a placeholder that a fast callback made for that UUID
is merged into our message (its events and parts move over, what Plivo told us wins over our
`accepted`), in journal order with the callbacks, so no lock dance with concurrent requests is
needed any more.
"""

from __future__ import annotations

import json
import uuid as uuidlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Connection

from plivo_tracker.inbound import repository as journal_repo
from plivo_tracker.messages import writes as repo
from plivo_tracker.messages.projection import Change, PassOptions, Projection
from plivo_tracker.messages.status import MessageStatus, decide_local

log = structlog.get_logger(__name__)

SOURCE = "local"  # journal.source of our own changes


@dataclass(frozen=True, slots=True)
class LocalChange:
    """A status change of our own, to be applied by the projector."""

    message_id: int
    status: MessageStatus
    # The statuses it may move the message on from; None: the message's birth.
    allowed_from: frozenset[MessageStatus] | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)  # shown in the timeline
    message_uuid: str | None = None  # Plivo's UUID for it, to adopt (`queued`)
    # The reason shown with a failed/unknown message; `clear_error`: remove it (a resend).
    error_detail: str | None = None
    clear_error: bool = False

    @property
    def sets_error(self) -> bool:
        """Whether applying it writes `error_detail` (a reason, or None to clear it)."""
        return self.error_detail is not None or self.clear_error

    @property
    def dedupe_key(self) -> str:
        if self.allowed_from is None:
            return f"local:{self.message_id}:{self.status.value}"  # born once
        # Any other change may happen more than once (unknown, resent, unknown again).
        return f"local:{self.message_id}:{self.status.value}:{uuidlib.uuid4().hex[:16]}"


def journal(conn: Connection, changes: Sequence[LocalChange], now: datetime) -> None:
    """Append our changes to the journal, in the caller's transaction (in this order)."""
    if not changes:
        return
    rows = [
        (
            now,  # JOURNAL_COLS order
            SOURCE,
            None,
            c.dedupe_key,
            c.message_uuid or f"#{c.message_id}",  # the UUID it adopts: see `pending_adoptions`
            c.status.value,
            None,
            None,
            json.dumps(_payload(c), ensure_ascii=False, sort_keys=True),
            None,
        )
        for c in changes
    ]
    journal_repo.append_journal(conn, rows)


def pending_adoptions(conn: Connection, uuids: Sequence[str], except_id: int) -> set[str]:
    """Which of these UUIDs a message other than `except_id` is about to adopt: journaled, not
    yet applied (an operator's adoption must not be accepted twice in that window)."""
    if not uuids:
        return set()
    return journal_repo.pending_keys(conn, SOURCE, uuids, exclude=f"local:{except_id}:")


def _payload(c: LocalChange) -> dict[str, Any]:
    out: dict[str, Any] = {
        "message_id": c.message_id,
        "status": c.status.value,
        "allowed_from": None if c.allowed_from is None else sorted(c.allowed_from),
        "detail": dict(c.detail),
    }
    if c.message_uuid is not None:
        out["message_uuid"] = c.message_uuid
    if c.sets_error:
        out["error_detail"] = c.error_detail
    return out


def _from_row(row: Mapping[str, Any]) -> LocalChange:
    """The change a journal row holds (the inverse of `_payload`)."""
    p = json.loads(row["payload"])
    allowed = p["allowed_from"]
    return LocalChange(
        message_id=int(p["message_id"]),
        status=MessageStatus(p["status"]),
        allowed_from=None if allowed is None else frozenset(MessageStatus(s) for s in allowed),
        detail=p["detail"],
        message_uuid=p.get("message_uuid"),
        error_detail=p.get("error_detail"),
        clear_error="error_detail" in p and p["error_detail"] is None,
    )


def apply_local_rows(
    conn: Connection, rows: Sequence[Mapping[str, Any]], now: datetime, options: PassOptions
) -> Projection:
    """Apply a run of our own changes, in journal order (the projector's applier)."""
    parsed = [(row, _from_row(row)) for row in rows]
    msgs = repo.lock_messages_by_id(conn, {c.message_id for _, c in parsed})
    # A message counts in the statistics from its birth's projection on.
    born = {c.message_id for _, c in parsed if c.allowed_from is None}
    for loaded in msgs.values():
        if loaded.id not in born:
            options.deltas.remove(loaded.values)
    wanted = {c.message_uuid for _, c in parsed if c.message_uuid}
    holders = repo.uuid_holders(conn, wanted)  # UUID → (id, origin) of the message holding it
    events: list[dict[str, Any]] = []
    result = Projection()
    for row, c in parsed:
        m = msgs.get(c.message_id)
        if m is None:  # purged meanwhile (only settled messages are): nothing left to change
            log.warning("projector.local_change_without_message", message_id=c.message_id)
            continue
        mv = m.values
        detail = dict(c.detail)
        birth = c.allowed_from is None
        before = None if birth else mv["status"]  # what clients saw: the stream's previous
        if c.message_uuid and mv["message_uuid"] != c.message_uuid:
            _adopt(conn, m, c.message_uuid, holders, detail, options)  # may bring Plivo's
        current = None if birth else MessageStatus(mv["status"])
        decision = decide_local(current, c.status, c.allowed_from)
        if decision.changed:
            mv["status"] = decision.status.value
            if c.sets_error:
                mv["error_detail"] = c.error_detail
        if not birth and mv["status"] != before:
            result.changes.append(Change(m.id, mv["status"], mv["error_code"]))
        mv["updated_at"] = now
        events.append(
            {
                "message_id": m.id,
                "message_uuid": None,
                "status": c.status.value,
                "previous_status": before,
                "message_status": mv["status"],
                "sequence": None,
                "error_code": None,
                "effect": decision.effect.value,
                "dedupe_key": row["dedupe_key"],
                "source": SOURCE,
                "nonce": None,
                "signature_scheme": None,
                "method": None,
                "plivo_time": None,
                "received_at": row["received_at"],
                "payload": json.dumps(detail, ensure_ascii=False),
                "headers": None,
            }
        )
    for changed in msgs.values():
        options.deltas.add(changed.values)
    repo.update_local(conn, list(msgs.values()))
    repo.insert_events(conn, events)
    return result


def _adopt(
    conn: Connection,
    m: repo.Row,
    uuid: str,
    holders: dict[str, tuple[int, str]],
    detail: dict[str, Any],
    options: PassOptions,
) -> None:
    """Give our message `m` Plivo's UUID. A placeholder that callbacks made for it is merged in
    (what they established wins over our local status; what we sent stays as we sent it); a
    UUID that another message of ours or an inbound message holds is not taken: the message is
    flagged as a conflict, with the holder's id in the timeline."""
    mv = m.values
    holder = holders.get(uuid)
    if holder is not None and holder[0] != m.id:
        holder_id, origin = holder
        if origin != "callback":
            mv["has_conflict"] = True
            detail["uuid_taken_by"] = holder_id
            return
        found = repo.merge_placeholder(conn, holder_id, m.id)
        options.deltas.remove(found)  # counted as its own message until now
        for col in repo.MESSAGE_MUTABLE:
            if col not in ("to_number", "from_number", "type"):
                mv[col] = found[col]
        detail["merged_from"] = holder_id  # clients drop that message
    mv["message_uuid"] = uuid
    holders[uuid] = (m.id, "api")
    detail["message_uuid"] = uuid
