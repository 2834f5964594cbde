"""The stuck-message sweeper: no message waits for ever (seed requirement; docs/adr/0008).

A message of ours with a MessageUUID, no final status and no callback for STUCK_AFTER_SECONDS
(Plivo gives up on a callback after about 7 minutes) is looked up with Get Message, and what
Plivo says (`message_state`, `error_code`, billing and carrier) goes through the same ingestion
and status machine as a callback: it is appended to the journal as a report with source
`reconcile`, which the projector applies; it shows in the timeline and on `WS /ws` like any
other. A message Plivo still calls `sent` long after it was sent
(NO_RECEIPT_AFTER_SECONDS: carriers without delivery receipts) settles as "sent, no receipt".

One sweeper works at a time across processes (a lease in the database); every call keeps
Plivo's request limits (outbound/budget.py).
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Connection

from plivo_tracker import metrics
from plivo_tracker.db.engine import Writer
from plivo_tracker.inbound.items import CallbackItem, Outcome, make_item
from plivo_tracker.inbound.journal import append
from plivo_tracker.loops import Lease, PeriodicLoop
from plivo_tracker.outbound import repository as repo
from plivo_tracker.outbound.budget import Budget
from plivo_tracker.outbound.retry import Failure
from plivo_tracker.plivo.client import PlivoClient, SendError
from plivo_tracker.retention.content import erase_unneeded
from plivo_tracker.retention.rules import Erasure

log = structlog.get_logger(__name__)

LEASE_NAME = "sweeper"
# MDR field → the callback field it stands for (plivo-protocol.md §1.6 and §2.2).
_FIELDS = {
    "message_uuid": "MessageUUID",
    "message_state": "Status",
    "error_code": "ErrorCode",
    "to_number": "To",
    "from_number": "From",
    "message_type": "Type",
    "units": "Units",
    "total_rate": "TotalRate",
    "total_amount": "TotalAmount",
    "mcc": "MCC",
    "mnc": "MNC",
    "message_updated_time": "MessageUpdatedTime",
}


def mdr_fields(mdr: dict[str, Any]) -> dict[str, list[str]]:
    """An MDR as callback fields, so that it goes through the one status machine (pure)."""
    fields: dict[str, list[str]] = {}
    for key, name in _FIELDS.items():
        value = mdr.get(key)
        if value is not None and value != "":
            fields[name] = [str(value)]
    return fields


@dataclass
class SweepResult:
    looked_up: int = 0
    changed: int = 0  # answers journaled as new reports (the projector applies them)
    no_receipt: int = 0
    unknown_at_plivo: int = 0
    errors: int = 0
    lines: list[str] = field(default_factory=list)  # one per message (dry runs, the CLI)


class Sweeper(PeriodicLoop):
    """Sweeps every `interval` seconds while this process holds the lease (a leader: the
    lease lasts three intervals, so another process takes over when this one is gone)."""

    name = "sweeper"

    def __init__(
        self,
        writer: Writer,
        client: PlivoClient,
        budget: Budget,
        *,
        stuck_after: float,
        no_receipt_after: float,
        interval: float,
        batch: int = 100,
        erasure: Erasure | None = None,
    ) -> None:
        super().__init__(interval)
        self._writer = writer
        self._client = client
        self._budget = budget
        self.stuck_after = timedelta(seconds=stuck_after)
        self.no_receipt_after = timedelta(seconds=no_receipt_after)
        self._batch = batch
        self._erasure = erasure
        self._lease = Lease(writer, LEASE_NAME, timedelta(seconds=max(interval * 3, 60.0)))

    async def run_once(self, *, dry_run: bool = False) -> SweepResult:
        now = datetime.now(UTC)
        result = SweepResult()
        if not dry_run and not await self._lease.hold(now):
            return result
        stuck = await self._writer.run(
            functools.partial(
                repo.claim_stuck,
                now=now,
                stuck_before=now - self.stuck_after,
                limit=self._batch,
                claim=not dry_run,
            )
        )
        for message in stuck:
            await self._sweep_one(message, now, result, dry_run)
        return result

    async def _get(self, uuid: str) -> dict[str, Any] | None:
        """Get Message within the budget; a 429 (someone else used the account's requests) is
        waited out (Retry-After, else a second) a few times before it counts as a failure."""
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            await self._budget.before_read()
            try:
                return await self._client.get_message(uuid)
            except SendError as exc:
                if exc.failure != Failure.RATE_LIMITED or attempt == RATE_LIMIT_RETRIES:
                    raise
                await asyncio.sleep(exc.retry_after or 1.0)
        raise AssertionError("unreachable")

    async def _sweep_one(
        self, message: repo.Stuck, now: datetime, result: SweepResult, dry_run: bool
    ) -> None:
        try:
            mdr = await self._get(message.message_uuid)
        except SendError as exc:
            result.errors += 1
            result.lines.append(f"{message.id}: lookup failed: {exc}")
            log.warning("sweeper.lookup_failed", message_id=message.id, error=str(exc))
            if not dry_run:  # not looked up after all: the next pass tries again
                await self._writer.run(functools.partial(repo.unsweep, message_id=message.id))
            return
        result.looked_up += 1
        if mdr is None:
            result.unknown_at_plivo += 1
            result.lines.append(f"{message.id}: Plivo does not know {message.message_uuid}")
            log.warning("sweeper.unknown_at_plivo", message_id=message.id)
            return
        state = str(mdr.get("message_state") or "")
        sent_since = message.sent_at or message.created_at
        no_receipt = state == "sent" and now - sent_since >= self.no_receipt_after
        result.lines.append(
            f"{message.id}: ours {message.status}, Plivo {state or '?'}"
            + (" → sent, no receipt" if no_receipt else "")
        )
        if dry_run:
            return
        item = make_item(
            received_at=datetime.now(UTC),
            method="GET",
            path="/reconcile/get-message",
            query="",
            headers={},
            body=b"",
            fields=mdr_fields(mdr),
            nonce=None,
            scheme=None,
            source="reconcile",
        )
        changed = await self._writer.run(
            functools.partial(
                _apply,
                item=item,
                message_id=message.id,
                no_receipt=no_receipt,
                erasure=self._erasure,
            )
        )
        result.changed += changed
        if no_receipt:
            result.no_receipt += 1
        metrics.SWEPT.labels(outcome="no_receipt" if no_receipt else state or "unknown").inc()


RATE_LIMIT_RETRIES = 5


def _apply(
    conn: Connection,
    item: CallbackItem,
    message_id: int,
    no_receipt: bool,
    erasure: Erasure | None = None,
) -> int:
    """Plivo's answer appended to the journal (the projector applies it, as any callback), and
    the settled reason, in one transaction (which also erases the text once it is settled, with
    STORE_MESSAGE_TEXT=false). Returns 1 when the answer was new, 0 when already journaled."""
    now = datetime.now(UTC)
    (outcome,) = append(conn, [item], now)
    if no_receipt:
        repo.settle_no_receipt(conn, message_id, now)
        erase_unneeded(conn, [message_id], now, erasure)
    return 1 if outcome == Outcome.STORED else 0
