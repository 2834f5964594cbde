"""Leadership (loops.py) on real SQLite and PostgreSQL: across Leadership instances with their own
engines and writers on one database, as separate processes would have, exactly one runs the job;
a holder that stops renewing is replaced once its lease has run out, one that stops cleanly
hands over at the next renewal, and a leader that cannot renew stops its job."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Connection, select, update

from plivo_tracker.db.engine import DatabaseUnavailable, Writer, make_engine, make_writer
from plivo_tracker.loops import Leadership, PeriodicLoop, leading, owner_name, owner_pid
from plivo_tracker.messages.models import leases
from plivo_tracker.simulator.scenario import ScenarioConfig
from tests.conftest import ServiceOpener

T = TypeVar("T")

TTL = timedelta(seconds=1.5)
RENEW = 0.25
DEADLINE = 20.0  # seconds: generous; what each case bounds is stated in its assertions


class Job:
    """A job that runs until stopped and counts its runs (restartable, like the loops)."""

    def __init__(self) -> None:
        self.running = False
        self.runs = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        self.running = True
        self.runs += 1
        try:
            await self._stop.wait()
        finally:
            self._stop.clear()
            self.running = False

    def stop(self) -> None:
        self._stop.set()


class Switchable:
    """A writer whose database can be made unreachable (`down`)."""

    def __init__(self, inner: Writer) -> None:
        self._inner = inner
        self.down = False
        self.answering = asyncio.Event()  # cleared: calls wait (a database that hangs)
        self.answering.set()
        self.on_commit = None

    async def run(self, fn: Callable[[Connection], T], *, background: bool = False) -> T:
        await self.answering.wait()
        if self.down:
            raise DatabaseUnavailable("switched off by the test")
        return await self._inner.run(fn, background=background)

    async def close(self) -> None:
        await self._inner.close()


@contextlib.asynccontextmanager
async def process_writer(db_url: str) -> AsyncIterator[Writer]:
    """An engine and a writer of their own: what one process has."""
    engine = make_engine(db_url)
    writer = make_writer(engine)
    try:
        yield writer
    finally:
        await writer.close()
        await engine.dispose()


async def until(check: Callable[[], bool], what: str, seconds: float = DEADLINE) -> float:
    """Poll `check` until true; returns the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > seconds:
            pytest.fail(f"not {what} within {seconds} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def lease_row(writer: Writer, name: str) -> Any:
    return await writer.run(lambda c: c.execute(select(leases).where(leases.c.name == name)).one())


def started(leadership: Leadership) -> asyncio.Task[None]:
    return asyncio.create_task(leadership.run())


async def stopped(leadership: Leadership, task: asyncio.Task[None]) -> None:
    leadership.stop()
    await task


def exactly_one(pairs: list[tuple[Leadership, Job]]) -> bool:
    leaders = [(lead, job) for lead, job in pairs if lead.leading]
    return len(leaders) == 1 and all(job.running == lead.leading for lead, job in pairs)


async def test_exactly_one_of_two_leads_and_runs_the_job(db_url: str) -> None:
    async with process_writer(db_url) as w1, process_writer(db_url) as w2:
        jobs = [Job(), Job()]
        one = Leadership(w1, "job", jobs[0], ttl=TTL, renew_every=RENEW)
        two = Leadership(w2, "job", jobs[1], ttl=TTL, renew_every=RENEW)
        pairs = [(one, jobs[0]), (two, jobs[1])]
        tasks = [started(one), started(two)]
        try:
            await until(lambda: exactly_one(pairs), "one leader")
            leader = one if one.leading else two
            # Through several renewals (watched, not slept through): still that one, alone.
            row = await lease_row(w1, "job")
            assert row.owner == leader.owner
            watch_until = row.until + 4 * TTL / 3  # several renewals later
            deadline = time.monotonic() + DEADLINE
            while (row := await lease_row(w1, "job")).until < watch_until:
                assert exactly_one(pairs)
                assert row.owner == leader.owner
                assert time.monotonic() < deadline, "the lease was not renewed"
                await asyncio.sleep(0.02)
            assert sum(job.runs for job in jobs) == 1  # started once, never stopped
        finally:
            await stopped(one, tasks[0])
            await stopped(two, tasks[1])
        assert not any(job.running for job in jobs)


async def test_a_dead_holder_is_replaced_once_its_lease_has_run_out(db_url: str) -> None:
    ttl, renew = timedelta(seconds=4), 0.5  # the dead one's lease outlives the look at it
    async with process_writer(db_url) as w1, process_writer(db_url) as w2:
        first, second = Job(), Job()
        # release=False: it goes away as a killed process would, leaving its lease behind.
        dying = Leadership(w1, "job", first, ttl=ttl, renew_every=renew, release=False)
        dying_task = started(dying)
        await until(lambda: dying.leading and first.running, "leading")
        other = Leadership(w2, "job", second, ttl=ttl, renew_every=renew)
        other_task = started(other)
        try:
            dying_task.cancel()  # no more renewals, no release
            with contextlib.suppress(asyncio.CancelledError):
                await dying_task
            left = await lease_row(w2, "job")
            assert left.owner == dying.owner  # still held by the dead one
            took = await until(lambda: other.leading and second.running, "taken over")
            # Never while the dead one's lease was current, and within ttl + renewal after.
            assert other.since is not None
            assert other.since >= left.until
            assert took <= (ttl.total_seconds() + renew) + DEADLINE / 2
            assert (await lease_row(w2, "job")).owner == other.owner
        finally:
            await stopped(other, other_task)


async def test_a_clean_stop_hands_over_at_the_next_renewal(db_url: str) -> None:
    long_ttl = timedelta(seconds=60)  # a hand-over well before it shows the lease was released
    async with process_writer(db_url) as w1, process_writer(db_url) as w2:
        first, second = Job(), Job()
        one = Leadership(w1, "job", first, ttl=long_ttl, renew_every=RENEW)
        one_task = started(one)
        await until(lambda: one.leading, "leading")
        two = Leadership(w2, "job", second, ttl=long_ttl, renew_every=RENEW)
        two_task = started(two)
        try:
            stop_at = datetime.now(UTC)
            await stopped(one, one_task)
            assert not first.running
            released = await lease_row(w1, "job")
            assert released.owner in (None, two.owner)  # released (or taken over already)
            await until(lambda: two.leading and second.running, "handed over", seconds=30)
            assert two.since is not None
            assert two.since - stop_at < long_ttl / 2
        finally:
            await stopped(two, two_task)


async def test_a_leader_whose_lease_is_taken_stops_its_job(db_url: str) -> None:
    async with process_writer(db_url) as writer:
        job = Job()
        leadership = Leadership(writer, "stolen", job, ttl=TTL, renew_every=RENEW)
        task = started(leadership)
        try:
            await until(lambda: leadership.leading and job.running, "leading")
            assert gauge("stolen") == 1

            def steal(conn: Connection) -> None:
                later = datetime.now(UTC) + timedelta(hours=1)
                conn.execute(
                    update(leases).where(leases.c.name == "stolen").values(owner="x", until=later)
                )

            await writer.run(steal)
            await until(lambda: not leadership.leading and not job.running, "stepped down")
            assert gauge("stolen") == 0
        finally:
            await stopped(leadership, task)
        assert (await lease_row(writer, "stolen")).owner == "x"  # not released: not ours


async def test_a_leader_that_cannot_renew_stops_and_resumes_when_it_can(db_url: str) -> None:
    async with process_writer(db_url) as inner:
        writer = Switchable(inner)
        job = Job()
        leadership = Leadership(writer, "flaky", job, ttl=TTL, renew_every=RENEW)
        task = started(leadership)
        try:
            await until(lambda: leadership.leading and job.running, "leading")
            writer.down = True
            await until(lambda: not leadership.leading and not job.running, "stepped down")
            writer.down = False
            await until(lambda: leadership.leading and job.running, "leading again")
            assert job.runs == 2  # the same job, run again
        finally:
            await stopped(leadership, task)


async def test_a_renewal_that_hangs_stops_the_job_before_the_lease_runs_out(db_url: str) -> None:
    ttl, renew = timedelta(seconds=4), 1.0  # the job must stop a second before the lease ends
    async with process_writer(db_url) as inner:
        writer = Switchable(inner)
        job = Job()
        leadership = Leadership(writer, "hung", job, ttl=ttl, renew_every=renew)
        task = started(leadership)
        try:
            await until(lambda: leadership.leading and job.running, "leading")
            writer.answering.clear()  # renewals get no answer from now on
            await until(lambda: not job.running, "stopped")
            stopped_at = datetime.now(UTC)
            assert not leadership.leading
            held = await lease_row(inner, "hung")
            assert held.owner == leadership.owner
            assert stopped_at < held.until  # before any other process could take over
            writer.answering.set()  # the renewal in flight answers: leading again
            await until(lambda: leadership.leading and job.running, "leading again")
        finally:
            writer.answering.set()
            await stopped(leadership, task)


async def test_a_job_that_fails_is_run_again_while_leading(db_url: str) -> None:
    class Failing(Job):
        failed = False

        async def run(self) -> None:
            if not self.failed:
                self.failed = True
                raise RuntimeError("boom")
            await super().run()

    async with process_writer(db_url) as writer:
        job = Failing()
        async with leading(writer, "failing", job, ttl=TTL, renew_every=RENEW) as leadership:
            await until(lambda: job.running, "running again")
            assert leadership.leading
            assert job.failed
            assert job.runs == 1


async def test_leading_releases_the_lease_when_the_block_ends(db_url: str) -> None:
    async with process_writer(db_url) as writer:
        job = Job()
        async with leading(writer, "block", job) as leadership:
            await until(lambda: job.running, "running")
            assert leadership.leading
            holder = await lease_row(writer, "block")
            assert holder.owner == leadership.owner
        assert not job.running
        assert not leadership.leading
        assert (await lease_row(writer, "block")).owner is None


def test_owner_names_carry_the_process_id() -> None:
    import os

    name = owner_name("dispatcher")
    assert name.startswith("dispatcher-")
    assert owner_pid(name) == os.getpid()
    assert len(owner_name("x" * 32)) <= 64
    assert owner_pid(None) is None
    assert owner_pid("dispatcher-abcd") is None


def test_renewals_must_come_at_least_twice_per_ttl() -> None:
    with pytest.raises(ValueError, match="twice"):
        Leadership(Switchable(None), "x", Job(), ttl=timedelta(seconds=1), renew_every=0.6)  # type: ignore[arg-type]


async def test_a_periodic_loop_runs_again_after_a_stop() -> None:
    class Counting(PeriodicLoop):
        def __init__(self) -> None:
            super().__init__(interval=30.0)
            self.passes = 0
            self.ran = asyncio.Event()

        async def run_once(self) -> None:
            self.passes += 1
            self.ran.set()

    loop = Counting()
    loop.stop()
    await loop.run()  # stopped before it started: no pass
    assert loop.passes == 0
    for passes in (1, 2):
        task = asyncio.create_task(loop.run())
        await loop.ran.wait()
        loop.ran.clear()
        loop.stop()
        await task
        assert loop.passes == passes


def gauge(job: str) -> float | None:
    return REGISTRY.get_sample_value("plivo_tracker_leader", {"lease": job})


async def test_ready_and_metrics_tell_whether_this_process_leads(
    simulator_service: ServiceOpener,
) -> None:
    async with simulator_service(ScenarioConfig()) as (client, _app):

        async def leaders() -> dict[str, Any]:
            body: dict[str, Any] = (await client.get("/ready")).json()
            return body["leaders"]

        deadline = time.monotonic() + DEADLINE
        while (found := await leaders())["dispatcher"] != {"here": True, "held": True}:
            assert time.monotonic() < deadline, found
            await asyncio.sleep(0.05)
        metrics = (await client.get("/metrics")).text
        assert 'plivo_tracker_leader{lease="dispatcher"} 1.0' in metrics
    assert gauge("dispatcher") == 0  # released on the way out
