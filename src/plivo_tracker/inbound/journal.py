"""The acknowledgement's one durable job: append verified reports to the journal.

Runs inside the group committer's transaction; `200` is sent after its COMMIT. Every answer
comes from a unique constraint, without reading anything first:
- every nonce of every request goes to `callback_nonces` (insert or ignore): a request with any
  nonce seen before is a replay — recorded, not appended;
- a signed body that does not parse goes to the quarantine, raw;
- everything else is one journal row; its `dedupe_key` is unique, so a second copy of the same
  report (a Plivo retry under a new nonce) is a duplicate.
What a report does to its message is decided later, in journal order, by the projector
(messages/projector.py); docs/adr/0011.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from plivo_tracker.inbound import repository as repo
from plivo_tracker.inbound.items import CallbackItem, Outcome


def payload_json(fields: dict[str, list[str]]) -> str:
    """Every field as received, one JSON object (a list only for a repeated field)."""
    flat = {k: v[0] if len(v) == 1 else v for k, v in fields.items()}
    return json.dumps(flat, ensure_ascii=False, sort_keys=True)


def payload_fields(payload: str) -> dict[str, list[str]]:
    """The inverse of `payload_json`."""
    flat: dict[str, Any] = json.loads(payload)
    return {k: v if isinstance(v, list) else [v] for k, v in flat.items()}


def append(conn: Connection, items: Sequence[CallbackItem], now: datetime) -> list[Outcome]:
    """Record a batch of verified requests; return each one's outcome, in order."""
    outcomes: list[Outcome | None] = [None] * len(items)

    # 1. Nonces: a request with any nonce committed before (or earlier in this batch) is a
    #    replay. Every nonce of every item is recorded, a replay's too, so a captured request
    #    stripped of one signature family replays nothing either.
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
    repo.insert_quarantine(conn, [_quarantine_row(items[i]) for i in quarantined])
    for i in quarantined:
        outcomes[i] = Outcome.QUARANTINED

    # 3. The journal: one row per report not seen before (in this batch or ever).
    rows: dict[str, tuple[int, tuple[Any, ...]]] = {}
    for i, it in enumerate(items):
        if outcomes[i] is not None or it.event is None:
            continue
        key = it.event.dedupe_key
        if key in rows:
            outcomes[i] = Outcome.DUPLICATE
        else:
            rows[key] = (i, _journal_row(it))
    new = repo.append_journal(conn, [row for _, row in rows.values()])
    for key, (i, _) in rows.items():
        outcomes[i] = Outcome.STORED if key in new else Outcome.DUPLICATE
    return [o or Outcome.DUPLICATE for o in outcomes]


def _journal_row(item: CallbackItem) -> tuple[Any, ...]:
    ev = item.event
    assert ev is not None
    # In repo.JOURNAL_COLS order.
    return (
        item.received_at,
        item.source,
        item.method,
        ev.dedupe_key,
        ev.message_key,
        ev.status.value,
        item.nonce,
        item.scheme,
        payload_json(item.fields),
        json.dumps(item.headers),
    )


def _quarantine_row(item: CallbackItem) -> dict[str, Any]:
    return {
        "received_at": item.received_at,
        "path": item.path,
        "method": item.method,
        "query": item.query,
        "headers": json.dumps(item.headers),
        "body": item.body,
        "reason": (item.reason or "unparseable")[:300],
        "nonce": item.nonce,
    }
