"""The statistics rollups, kept by the projector (docs/adr/0007, revised by 0011).

`GET /api/stats` reads four rollup tables that count messages per minute, hour and day of their
`created_at` (messages/stats.py). They used to be kept by triggers on `messages`, which ran on
every row update; since the projector became the only writer of statuses, it keeps them
instead: each applier notes every message it creates, changes or merges away, before and after,
and one pass's net differences go out as one upsert per table (`Deltas.flush`).

The rules are the triggers' (tests/integration/test_projector.py compares the tables with a
count over `messages` after random journals cut into random passes):
- a row counts the messages created in one block of `grain` minutes starting at `minute`;
- stats_status counts every message by status; stats_errors those with an error code;
  stats_carriers those with an MCC (a missing MNC is ''), with total / delivered / failed;
  stats_latency our own sends (origin 'api') with sent_at / delivered_at, bucketed
  (`stats.bucket_ms`);
- a change moves a message's contribution (minus the old, plus the new); rows that fall to 0
  stay and reads ignore them. Deleting old messages (the purge) changes nothing here.

A message counts from its first projection: a send the API stores is counted when the
projector applies its birth (`accepted`), a placeholder or an inbound message when it is made.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table

from plivo_tracker.db.dialect import from_driver_time, upsert_add
from plivo_tracker.messages.models import stats_carriers, stats_errors, stats_latency, stats_status
from plivo_tracker.messages.stats import GRAINS, bucket_ms
from plivo_tracker.messages.status import FAILURES

# The columns of a message the rollups look at.
COUNTED = (
    "origin",
    "created_at",
    "status",
    "error_code",
    "mcc",
    "mnc",
    "sent_at",
    "delivered_at",
)
TABLES: dict[str, Table] = {
    t.name: t for t in (stats_status, stats_errors, stats_carriers, stats_latency)
}
_FAILED = frozenset(s.value for s in FAILURES)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MINUTE = timedelta(minutes=1)
_MS = timedelta(milliseconds=1)

# (table, key after grain and minute) → counts; the key's grain and minute are added per grain.
Contribution = list[tuple[str, tuple[Any, ...], tuple[int, ...]]]


def contribution(row: Mapping[str, Any]) -> Contribution:
    """What one message adds to the rollups, before the grains (pure)."""
    if row["origin"] == "claim":  # a UUID reserved inside a transaction (before migration 0010)
        return []
    status = row["status"]
    out: Contribution = [("stats_status", (status,), (1,))]
    if row["error_code"] is not None:
        out.append(("stats_errors", (row["error_code"],), (1,)))
    if row["mcc"] is not None:
        counts = (1, int(status == "delivered"), int(status in _FAILED))
        out.append(("stats_carriers", (row["mcc"], row["mnc"] or ""), counts))
    if row["origin"] == "api":
        created = _time(row["created_at"])
        for kind, col in (("sent", "sent_at"), ("delivered", "delivered_at")):
            at = _time(row[col])
            if at is not None and created is not None:
                out.append(("stats_latency", (kind, bucket_ms((at - created) // _MS)), (1,)))
    return out


def _time(value: Any) -> datetime | None:
    # Rows read at driver level hold SQLite's text; the rest are datetimes.
    return from_driver_time(value)


class Deltas:
    """The net change of one pass to the rollups: `add` a message's state after, `remove` its
    state before (a message created in the pass has none), then `flush` once."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, tuple[Any, ...], int]] = Counter()

    def add(self, row: Mapping[str, Any], sign: int = 1) -> None:
        created = _time(row["created_at"])
        if created is None:
            return
        minute = (created - _EPOCH) // _MINUTE
        for table, key, counts in contribution(row):
            for grain in GRAINS:
                full = (grain, minute // grain * grain, *key)
                for i, n in enumerate(counts):
                    if n:
                        self._counts[(table, full, i)] += sign * n

    def remove(self, row: Mapping[str, Any]) -> None:
        self.add(row, -1)

    def flush(self, conn: Connection) -> None:
        """One upsert per table that changed (rows in key order: no deadlock between passes,
        which one lock already serialises anyway)."""
        by_table: dict[str, dict[tuple[Any, ...], list[int]]] = {}
        for (name, key, i), n in self._counts.items():
            if n:
                width = 3 if name == "stats_carriers" else 1
                by_table.setdefault(name, {}).setdefault(key, [0] * width)[i] = n
        self._counts.clear()
        for name, rows in sorted(by_table.items()):
            table = TABLES[name]
            keys = [c.name for c in table.c if c.primary_key]
            values = [c.name for c in table.c if not c.primary_key]
            upsert_add(conn, table, keys, values, [(*k, *v) for k, v in sorted(rows.items())])


def counted(values: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """The counted columns of a snapshot: `values` (the projector's mutable columns) with
    `extra` filling what it does not hold (origin, created_at)."""
    return {c: values[c] if c in values else extra[c] for c in COUNTED}
