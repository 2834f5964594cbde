"""Group commit: concurrent callbacks share one transaction and one fsync.

Each request puts its item on a queue and awaits a future. One task takes everything queued (up to
`max_batch`), appends it to the journal in one transaction (inbound/journal.py), commits, and only
then resolves the futures, so a 200 always follows a durable COMMIT. What the reports do to their
messages is the projector's job, after the answer (the writer's `on_journal` wakes it). No timer
is involved: while one commit is in flight the next batch gathers by itself, so batching grows
with load and costs nothing at rest.

If a batch fails, its items are retried one at a time so one bad item cannot sink the others;
items that still fail go to the spool (an fsynced file) when one is configured, else the request
gets an error and Plivo retries.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from plivo_tracker import metrics
from plivo_tracker.db.engine import DatabaseUnavailable, Writer, make_writer
from plivo_tracker.inbound.items import CallbackItem, Outcome
from plivo_tracker.inbound.journal import append
from plivo_tracker.inbound.spool import Spool
from plivo_tracker.plivo.inbound import KIND as INBOUND

log = structlog.get_logger(__name__)

Spooler = Callable[[list[CallbackItem]], Awaitable[object]]


class CommitterClosed(RuntimeError):
    """The committer is shutting down and takes no new work."""


class StoreFailed(RuntimeError):
    """Neither the database nor the spool could take the item: answer 503 so Plivo retries."""


_Entry = tuple[CallbackItem, "asyncio.Future[Outcome]"]


def _count(item: CallbackItem, outcome: str) -> None:
    """Inbound messages and status reports are counted apart (/metrics)."""
    counter = metrics.INBOUND if item.source == INBOUND else metrics.CALLBACKS
    counter.labels(outcome=outcome).inc()


class GroupCommitter:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_batch: int = 256,
        spool: Spooler | None = None,
        writer: Writer | None = None,
    ) -> None:
        # A writer passed in is shared (and closed) by its owner.
        self._own_writer = writer is None
        self._writer = writer or make_writer(engine)
        self._max_batch = max_batch
        self._spool = spool
        self._queue: asyncio.Queue[_Entry | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="group-committer")

    async def stop(self) -> None:
        """Stop taking work, finish and commit everything already queued, then return."""
        self._closed = True
        if self._task is not None:
            self._queue.put_nowait(None)
            await self._task
            self._task = None
        if self._own_writer:
            await self._writer.close()

    async def submit(self, item: CallbackItem) -> Outcome:
        """Queue `item` and wait until its batch is committed (or spooled)."""
        if self._closed:
            raise CommitterClosed("shutting down")
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, fut))
        metrics.COMMIT_QUEUE.inc()
        # Shielded: a client that hangs up must not cancel work its batch still does.
        return await asyncio.shield(fut)

    async def replay(self, spool: Spool) -> int:
        """Commit every spooled file (one transaction each) and delete it; returns items replayed.

        Nonces make this idempotent: an item committed before a crash is a replay now.
        """
        count = 0
        failures: list[str] = []
        for path in spool.pending():
            try:
                items = spool.read(path)
            except FileNotFoundError:
                continue  # another process (`serve --workers N`) replayed it meanwhile
            try:
                await self._commit(items)
            except Exception as exc:  # noqa: BLE001 - keep the file, try the others
                failures.append(f"{path.name}: {exc!r}")
                continue
            spool.remove(path)
            count += len(items)
        if failures:
            raise RuntimeError(f"{len(failures)} spool file(s) not replayed: {failures[0]}")
        return count

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            entry = await self._queue.get()
            if entry is None:
                stopping = True
                batch: list[_Entry] = []
            else:
                batch = [entry]
            while len(batch) < self._max_batch and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stopping = True
                    continue
                batch.append(nxt)
            if batch:
                metrics.COMMIT_QUEUE.dec(len(batch))
                await self._process(batch)

    async def _process(self, batch: list[_Entry]) -> None:
        items = [item for item, _ in batch]
        started = time.perf_counter()
        try:
            outcomes = await self._commit(items)
        except DatabaseUnavailable as exc:
            log.warning(
                "committer.database_unavailable", size=len(items), error=repr(exc.__cause__)
            )
            await self._spool_or_fail(batch)
            return
        except Exception as exc:  # noqa: BLE001 - any database error: fall back item by item
            log.warning("committer.batch_failed", size=len(items), error=repr(exc))
            await self._one_by_one(batch)
            return
        metrics.COMMIT_BATCH.observe(len(items))
        metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
        self._resolve(batch, outcomes)

    async def _commit(self, items: list[CallbackItem]) -> list[Outcome]:
        now = datetime.now(UTC)
        return await self._writer.run(lambda conn: append(conn, items, now))

    def _resolve(self, batch: list[_Entry], outcomes: list[Outcome]) -> None:
        # The transaction is committed: release the waiting requests.
        for (item, fut), outcome in zip(batch, outcomes, strict=True):
            _count(item, outcome.value)
            if not fut.done():
                fut.set_result(outcome)

    async def _one_by_one(self, batch: list[_Entry]) -> None:
        failed: list[_Entry] = []
        for entry in batch:
            try:
                outcomes = await self._commit([entry[0]])
            except Exception as exc:  # noqa: BLE001
                log.warning("committer.item_failed", error=repr(exc))
                failed.append(entry)
                continue
            self._resolve([entry], outcomes)
        if failed:
            await self._spool_or_fail(failed)

    async def _spool_or_fail(self, failed: list[_Entry]) -> None:
        if self._spool is not None:
            try:
                await self._spool([item for item, _ in failed])
            except Exception as exc:  # noqa: BLE001
                log.error("committer.spool_failed", size=len(failed), error=repr(exc))
            else:
                for item, fut in failed:
                    _count(item, "spooled")
                    if not fut.done():
                        fut.set_result(Outcome.STORED)
                return
        for item, fut in failed:
            _count(item, "failed")
            if not fut.done():
                fut.set_exception(StoreFailed("database and spool unavailable"))
