"""The purge: deletes what is older than the retention, a small batch per short transaction.

Order of a pass: settled messages (with their parts, events, send attempts and outbox rows),
the quarantine, idempotency keys, callback nonces, then the statistics rollups (their own, longer
retention). Each batch is one write transaction of about PURGE_BATCH_SIZE rows (a message counts
with the rows it takes along), through the same writer as the callback batches, so a callback
waits for one short batch at most: on SQLite the writer takes one transaction at a time; on
PostgreSQL a batch of messages skips any message another transaction holds (SKIP LOCKED: it is
left for the next pass), so it never waits for, or deadlocks with, a writer of statuses.
Batches are background work (`Writer.run`): on SQLite they run off the event loop, their
COMMITs do not wait for the disk (a crash may undo the last deletes; the next pass does them
again), and after each one the purge leaves the writer to the callbacks for as long as the
batch held it. What is kept and why: docs/operations.md
("Retention"), docs/adr/0009.

`serve` and `worker` run it every PURGE_INTERVAL_SECONDS; a lease makes it once per interval
across every process (whoever comes first when it is due). `plivo-tracker purge` runs one pass by
hand (no lease), or counts what one would delete (`--dry-run`, deleting nothing).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

import structlog
from sqlalchemy import Connection, Table

from plivo_tracker import metrics
from plivo_tracker.db.engine import Writer
from plivo_tracker.loops import Lease, PeriodicLoop
from plivo_tracker.messages.writes import begin_status_writes
from plivo_tracker.retention import repository as repo
from plivo_tracker.retention.rules import (
    Cutoffs,
    cutoffs,
    judge,
    last_rollup_minute,
    messages_per_batch,
)

if TYPE_CHECKING:
    from plivo_tracker.config import Settings

log = structlog.get_logger(__name__)
T = TypeVar("T")

LEASE_NAME = "purge"
# How often each process looks whether the purge is due (it is, once per interval in all).
CHECK_EVERY = 60.0
# Tables in the order a pass reaches them (and the CLI prints them).
TABLES = (
    "messages",
    "status_events",
    "message_parts",
    "send_attempts",
    "outbox",
    "quarantine",
    "idempotency_keys",
    "callback_nonces",
    "journal",
    *(t.name for t in repo.ROLLUPS),
)


@dataclass
class PurgeResult:
    """What a pass deleted (or, dry, would delete), per table; `kept`: messages older than the
    cut-off that stay: not settled for good, chained to one that is not, or holding the
    newest message or event id."""

    cutoffs: Cutoffs
    dry_run: bool = False
    deleted: Counter[str] = field(default_factory=Counter)
    kept: int = 0
    batches: int = 0
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        return {table: self.deleted[table] for table in TABLES}


@dataclass(frozen=True, slots=True)
class _MessageBatch:
    cursor: repo.Cursor | None  # None: nothing older is left to read
    deleted: dict[str, int]
    chained: frozenset[int]  # messages of resend chains that went (a chain spans batches)
    kept: int


def _message_batch(
    conn: Connection,
    cutoff: datetime,
    after: repo.Cursor | None,
    limit: int,
    done: set[int],
    dry_run: bool,
) -> _MessageBatch:
    """One transaction: read the next old messages, judge them, delete (or count) the ones
    that go. `done`: messages of chains a dry run counted already (a chain is met again from
    each of its messages)."""
    batch = repo.old_messages(conn, cutoff, after, limit, lock=not dry_run)
    if not batch:
        return _MessageBatch(None, {}, frozenset(), 0)
    members = repo.chained(conn, batch, lock=not dry_run)
    verdict = judge(batch, members, cutoff, repo.newest_ids(conn))
    ids = sorted(verdict.delete - done)
    counted = repo.count_messages(conn, ids) if dry_run else repo.delete_messages(conn, ids)
    last = batch[-1]
    chained = frozenset(i for i in ids if members[i].attempt_of is not None or members[i].resent)
    return _MessageBatch((last.created_at, last.id), counted, chained, len(verdict.kept))


def _keyed_batch(conn: Connection, table: str, cutoff: datetime, limit: int) -> tuple[int, bool]:
    """Delete up to `limit` of the table's oldest rows from before `cutoff`: (deleted, more)."""
    keys = repo.old_keys(conn, table, cutoff, limit)
    return repo.delete_keys(conn, table, keys), len(keys) == limit


def _rollup_batch(
    conn: Connection, table: Table, grain: int, last: int, limit: int
) -> tuple[int, bool]:
    """Delete about `limit` rollup rows of `grain` from before minute `last`. A change to a
    very old message may upsert these rows at the same moment: like every writer of statuses
    the batch first waits its turn (PostgreSQL), so the two cannot deadlock."""
    begin_status_writes(conn, notify=False)
    bound = repo.rollup_bound(conn, table, grain, last, limit)
    upto = last if bound is None else min(bound, last)
    return repo.delete_rollups(conn, table, grain, upto), bound is not None and bound < last


class Purger(PeriodicLoop):
    """One pass per `run_once()`; as a loop, a pass whenever the lease says it is due."""

    name = "purge"

    def __init__(
        self,
        writer: Writer,
        *,
        retention: timedelta,
        stats_retention: timedelta,
        batch_size: int = 500,
        interval: float | None = None,
        share: float = 0.5,
    ) -> None:
        """`interval`: run as a loop, once per interval across processes (None: by hand, no
        lease). `share`: the most of the writer's time the purge takes (after each batch it
        leaves the writer to the callbacks for as long as the batch held it, at 0.5)."""
        super().__init__(min(interval, CHECK_EVERY) if interval else CHECK_EVERY)
        self._writer = writer
        self.retention = retention
        self.stats_retention = stats_retention
        self.batch_size = batch_size
        self._share = share
        self._held = 0.0  # seconds the last batch held the writer
        self._lease = Lease(writer, LEASE_NAME, timedelta(seconds=interval)) if interval else None
        self._hold_at = 0.0  # monotonic time the lease is extended next during a pass

    async def run_once(
        self,
        *,
        older_than: timedelta | None = None,
        dry_run: bool = False,
        now: datetime | None = None,
    ) -> PurgeResult | None:
        """A pass over everything older than `older_than` (default: the retention) at `now`.
        As a loop (a lease), returns None when the purge is not due (another process did it)."""
        now = now or datetime.now(UTC)
        if self._lease is not None and not dry_run:
            if not await self._lease.take_when_due(now):
                return None
        cut = cutoffs(now, older_than or self.retention, self.stats_retention)
        result = PurgeResult(cut, dry_run)
        started = time.perf_counter()
        self._hold_at = time.monotonic() + CHECK_EVERY
        await self._messages(cut.messages, result)
        await self._keyed("quarantine", cut.messages, result)
        await self._keyed("idempotency_keys", cut.replay_guard, result)
        await self._keyed("callback_nonces", cut.replay_guard, result)
        await self._keyed("journal", cut.replay_guard, result)
        await self._rollups(cut.stats, result)
        result.seconds = time.perf_counter() - started
        self._report(result)
        return result

    async def _write(self, fn: Callable[[Connection], T]) -> T:
        """One batch as background work of the writer (see `Writer.run`), timed."""
        started = time.monotonic()
        try:
            return await self._writer.run(fn, background=True)
        finally:
            self._held = time.monotonic() - started

    async def _batch(self, result: PurgeResult) -> None:
        """Between two batches: let the writers that queued meanwhile go first, and keep the
        lease while a long pass (the first one on a large database) goes on."""
        result.batches += 1
        await asyncio.sleep(self._held * (1 - self._share) / self._share)
        if self._lease is not None and not result.dry_run and time.monotonic() >= self._hold_at:
            self._hold_at = time.monotonic() + CHECK_EVERY
            await self._lease.hold(datetime.now(UTC))

    async def _messages(self, cutoff: datetime, result: PurgeResult) -> None:
        """PURGE_BATCH_SIZE counts rows: a batch takes as many messages as make about that
        many rows with their events, parts, attempts and outbox rows."""
        cursor: repo.Cursor | None = None
        done: set[int] = set()
        limit = messages_per_batch(self.batch_size)
        while not self.stopping:
            batch = await self._write(
                functools.partial(
                    _message_batch,
                    cutoff=cutoff,
                    after=cursor,
                    limit=limit,
                    done=done,
                    dry_run=result.dry_run,
                )
            )
            if batch.deleted.get("messages"):
                rows = sum(batch.deleted.values())
                limit = messages_per_batch(self.batch_size, rows, batch.deleted["messages"])
            result.deleted.update(batch.deleted)
            result.kept += batch.kept
            if result.dry_run:
                done |= batch.chained
            if batch.cursor is None:
                return
            cursor = batch.cursor
            await self._batch(result)

    async def _keyed(self, table: str, cutoff: datetime, result: PurgeResult) -> None:
        if result.dry_run:
            count = functools.partial(repo.count_older, table=table, cutoff=cutoff)
            result.deleted[table] += await self._write(count)
            return
        more = True
        while more and not self.stopping:
            step = functools.partial(
                _keyed_batch, table=table, cutoff=cutoff, limit=self.batch_size
            )
            deleted, more = await self._write(step)
            result.deleted[table] += deleted
            await self._batch(result)

    async def _rollups(self, cutoff: datetime, result: PurgeResult) -> None:
        for table in repo.ROLLUPS:
            for grain in repo.GRAINS:
                last = last_rollup_minute(cutoff, grain)
                if result.dry_run:
                    count = functools.partial(
                        repo.count_rollups, table=table, grain=grain, last=last
                    )
                    result.deleted[table.name] += await self._write(count)
                    continue
                more = True
                while more and not self.stopping:
                    step = functools.partial(
                        _rollup_batch, table=table, grain=grain, last=last, limit=self.batch_size
                    )
                    deleted, more = await self._write(step)
                    result.deleted[table.name] += deleted
                    await self._batch(result)

    def _report(self, result: PurgeResult) -> None:
        """Count the deleted rows; the loop also logs one line (the CLI prints a table)."""
        counts = result.counts()
        if not result.dry_run:
            for table, n in counts.items():
                if n:
                    metrics.PURGED.labels(table=table).inc(n)
        if self._lease is None:
            return
        log.info(
            "purge.dry_run" if result.dry_run else "purge.done",
            older_than=result.cutoffs.messages.isoformat(),
            deleted={t: n for t, n in counts.items() if n},
            kept=result.kept,
            batches=result.batches,
            seconds=round(result.seconds, 3),
        )


def make_purger(writer: Writer, settings: Settings, *, loop: bool) -> Purger:
    """The purge of `settings` (`loop`: every PURGE_INTERVAL_SECONDS under the lease)."""
    return Purger(
        writer,
        retention=timedelta(days=settings.retention_days),
        stats_retention=timedelta(days=settings.stats_retention_days),
        batch_size=settings.purge_batch_size,
        interval=settings.purge_interval_seconds if loop else None,
    )
