"""Background jobs of `serve` and `worker`: a pass every interval, leases that let one process
at a time do a job that every process runs (the sweeper, the purge), and leadership: a job that
runs in exactly one process at a time, taken over within seconds when that process dies (the
outbox dispatcher of `serve --workers N`).

    Lease           a named row in `leases` (owner, until); `hold` renews, `take_when_due` waits
    PeriodicLoop    `run_once()` every interval until `stop()`; restartable
    Leadership      holds a lease (TTL a few seconds, renewed every second) and runs a job only
                    while it holds it; `leading(writer, name, job)` runs one for a block
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog

from plivo_tracker import metrics
from plivo_tracker.db.engine import Writer
from plivo_tracker.outbound import repository as repo

log = structlog.get_logger(__name__)

OWNER_MAX = 64  # leases.owner
LEADER_TTL = timedelta(seconds=5)
LEADER_RENEW_SECONDS = 1.0


def owner_name(name: str) -> str:
    """This process's owner name for lease `name`: `<name>-<random>:<pid>@<host>` (cut to the
    column's 64 characters), so an operator, or a test, sees which process holds it."""
    host = socket.gethostname().split(".")[0]
    return f"{name}-{secrets.token_hex(4)}:{os.getpid()}@{host}"[:OWNER_MAX]


def owner_pid(owner: str | None) -> int | None:
    """The process id in an owner name made by `owner_name` (None if there is none)."""
    if not owner or ":" not in owner:
        return None
    digits = owner.rsplit(":", 1)[1].split("@", 1)[0]
    return int(digits) if digits.isdigit() else None


class Lease:
    """A named row in `leases`: whoever holds it, until when. Each process has its own owner
    name, so a restarted process is a new owner that waits for the old lease to run out.

    `background`: its writes are the writer's background work (no fsync of their own): a
    renewal lost in a crash only makes the lease end sooner."""

    def __init__(
        self, writer: Writer, name: str, ttl: timedelta, *, background: bool = False
    ) -> None:
        self._writer = writer
        self.name = name
        self.ttl = ttl
        self.owner = owner_name(name)
        self._background = background
        self._made = False  # whether this process has made the lease's row

    async def hold(self, now: datetime) -> bool:
        """Become or stay the holder for `ttl` (a leader: the sweeper)."""
        return await self._take(now, renew=True)

    async def take_when_due(self, now: datetime) -> bool:
        """Take it only once it has run out, whoever held it: a job done once per `ttl` by
        whichever process comes first (the purge)."""
        return await self._take(now, renew=False)

    async def release(self) -> bool:
        """Give it up now if this process holds it (the next holder need not wait `ttl`)."""
        release = functools.partial(repo.release_lease, name=self.name, owner=self.owner)
        return await self._writer.run(release, background=self._background)

    async def _take(self, now: datetime, renew: bool) -> bool:
        if not self._made:  # the row, in a transaction of its own (`repo.ensure_rows`)
            make = functools.partial(repo.make_lease, name=self.name)
            await self._writer.run(make, background=self._background)
            self._made = True
        take = functools.partial(
            repo.take_lease, name=self.name, owner=self.owner, now=now, ttl=self.ttl, renew=renew
        )
        return await self._writer.run(take, background=self._background)


class PeriodicLoop:
    """`run_once()` every `interval` seconds until `stop()`. A pass that fails is logged
    (`<name>.pass_failed`) and the loop goes on; tests call `run_once()` directly. Once `run()`
    has returned it may be run again (a leader that lost and regained its lease)."""

    name = "loop"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    await self.run_once()
                except Exception:  # noqa: BLE001 - the loop must survive a bad pass; logged
                    log.exception(f"{self.name}.pass_failed")
                try:
                    await asyncio.wait_for(self._stopping.wait(), self.interval)
                except TimeoutError:
                    pass
        finally:
            self._stopping.clear()  # this stop is spent: a later run() runs

    async def run_once(self) -> object:
        raise NotImplementedError


class Job(Protocol):
    """What a Leadership runs: `run()` until `stop()` asks it to end (it finishes what it has
    in hand); `run()` may be called again after it returned."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...


class Leadership:
    """Runs `job` in exactly one process at a time: the one holding lease `name`.

    Every `renew_every` seconds it takes or renews the lease for `ttl`. Holding it, the job
    runs; a renewal that fails, is refused (someone else holds it), or does not answer until
    `renew_every` before the lease would run out stops the job. A process that died holding
    it is replaced within `ttl` + `renew_every` seconds; one that stops cleanly releases it,
    and another takes over at its next renewal. The lease's time is the wall clock of the
    processes (one host, or NTP).

    Stopping the job is a request: it finishes the pass in hand, so for a moment after a lost
    renewal the old and the new leader may both be working. A job under a leader must keep its
    writes safe for that (the dispatcher claims rows with SKIP LOCKED under leases of its own).
    """

    def __init__(
        self,
        writer: Writer,
        name: str,
        job: Job,
        *,
        ttl: timedelta = LEADER_TTL,
        renew_every: float = LEADER_RENEW_SECONDS,
        release: bool = True,
    ) -> None:
        if renew_every * 2 > ttl.total_seconds():
            raise ValueError("renew at least twice per TTL")
        self.name = name
        self.lease = Lease(writer, name, ttl, background=True)
        self._job = job
        self._renew_every = renew_every
        self._release = release  # on stop: give the lease up (a test simulates a death: False)
        self._running: asyncio.Task[None] | None = None  # the job, while leading
        self._renewal: asyncio.Task[bool] | None = None  # a renewal that has not answered yet
        self._renewal_started = 0.0
        self._valid_until = 0.0  # monotonic: the lease held by the last renewal runs out
        self._stopping = asyncio.Event()
        self.since: datetime | None = None  # leading since
        self.renewals = 0  # renewals answered, held or refused
        metrics.LEADER.labels(lease=name).set(0)

    @property
    def owner(self) -> str:
        return self.lease.owner

    @property
    def leading(self) -> bool:
        """This process runs the job now."""
        return self._running is not None

    def stop(self) -> None:
        """End `run()`: the job stops, and the lease is released (unless `release=False`)."""
        self._stopping.set()

    async def run(self) -> None:
        """Hold or wait for the lease, running the job while held, until `stop()`."""
        try:
            while not self._stopping.is_set():
                await self.tick()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._renew_every)
        finally:
            await self._step_down("stopped")
            await self._give_up()

    async def tick(self) -> None:
        """One renewal: start or stop the job as its outcome says."""
        held, why = await self._renew()
        if not held:
            await self._step_down(why)
            return
        if self._running is not None and self._running.done():
            self._reap(self._running)  # the job ended by itself: run it again
            self._running = None
        if self._running is None:
            self._start()

    def _start(self) -> None:
        self._running = asyncio.create_task(self._job.run(), name=f"leader-{self.name}")
        if self.since is None:
            self.since = datetime.now(UTC)
            metrics.LEADER.labels(lease=self.name).set(1)
            log.info("leader.gained", job=self.name, owner=self.owner)

    async def _step_down(self, why: str) -> None:
        task, self._running = self._running, None
        if task is None:
            return
        metrics.LEADER.labels(lease=self.name).set(0)
        self.since = None
        log_at = log.info if why == "stopped" else log.warning
        log_at("leader.lost", job=self.name, owner=self.owner, reason=why)
        if not task.done():
            self._job.stop()
            await asyncio.wait({task})  # it finishes what it has in hand
        self._reap(task)

    def _reap(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("leader.job_failed", job=self.name, error=repr(exc), exc_info=exc)

    async def _renew(self) -> tuple[bool, str]:
        """Take or renew the lease; (held, why not). A renewal still pending from an earlier
        tick is waited for instead of starting another."""
        if self._renewal is None:
            self._renewal_started = time.monotonic()
            self._renewal = asyncio.create_task(self.lease.hold(datetime.now(UTC)))
        # Leading, the job may run only as long as the last renewal holds the lease, less a
        # renewal period for the job to stop before another process may take over.
        if self._running is not None:
            wait = max(0.0, self._valid_until - self._renew_every - time.monotonic())
        else:
            wait = self.lease.ttl.total_seconds()
        done, _ = await asyncio.wait({self._renewal}, timeout=wait)
        if not done:
            return False, "renewal_timeout"
        renewal, self._renewal = self._renewal, None
        self.renewals += 1
        try:
            held = renewal.result()
        except Exception as exc:  # noqa: BLE001 - database down: not the leader meanwhile
            log.warning("leader.renew_failed", job=self.name, error=repr(exc))
            return False, "renewal_failed"
        if not held:
            return False, "held_elsewhere"
        self._valid_until = self._renewal_started + self.lease.ttl.total_seconds()
        if self._valid_until - self._renew_every <= time.monotonic():
            return False, "renewal_late"
        return True, ""

    async def _give_up(self) -> None:
        """After the job has stopped: release the lease, so that another process takes over
        at its next renewal instead of after `ttl`."""
        pending, self._renewal = self._renewal, None
        if pending is not None:  # a renewal in flight would take the lease back afterwards
            done, _ = await asyncio.wait({pending}, timeout=self.lease.ttl.total_seconds())
            if not done:
                return  # the database does not answer: the lease runs out by itself
            if not pending.cancelled():
                pending.exception()  # retrieved; a failed renewal took nothing
        if not self._release:
            return
        try:
            if await self.lease.release():
                log.info("leader.released", job=self.name, owner=self.owner)
        except Exception as exc:  # noqa: BLE001 - the lease runs out by itself
            log.warning("leader.release_failed", job=self.name, error=repr(exc))


@contextlib.asynccontextmanager
async def leading(
    writer: Writer,
    name: str,
    job: Job,
    *,
    ttl: timedelta = LEADER_TTL,
    renew_every: float = LEADER_RENEW_SECONDS,
) -> AsyncIterator[Leadership]:
    """Run `job` under leadership `name` for as long as the block runs: across every process
    that enters this with the same `name` on one database, exactly one runs the job. On exit
    the job stops and the lease is released."""
    leadership = Leadership(writer, name, job, ttl=ttl, renew_every=renew_every)
    task = asyncio.create_task(leadership.run(), name=f"leadership-{name}")
    try:
        yield leadership
    finally:
        leadership.stop()
        await task
