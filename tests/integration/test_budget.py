"""The shared token buckets (PLIVO_MPS, Plivo's API limit) through the database, on SQLite,
PostgreSQL and MariaDB: callers waiting at once are served by one transaction together, never
more tokens than the bucket allows, across processes too; a cancelled caller or a database
error leaves no one waiting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import pytest
from sqlalchemy import Connection, select
from sqlalchemy.ext.asyncio import AsyncEngine

from plivo_tracker.db.engine import Writer, make_writer
from plivo_tracker.messages.models import rate_limits
from plivo_tracker.outbound.budget import Budget, Limits

T = TypeVar("T")


class CountingWriter:
    """The real writer, counting its transactions (and failing them on demand)."""

    def __init__(self, inner: Writer) -> None:
        self.inner = inner
        self.transactions = 0
        self.fail: Exception | None = None

    async def run(self, fn: Callable[[Connection], T], *, background: bool = False) -> T:
        self.transactions += 1
        if self.fail is not None:
            raise self.fail
        return await self.inner.run(fn, background=background)


@pytest.fixture
async def writers(engine: AsyncEngine) -> AsyncIterator[list[CountingWriter]]:
    """Two writers on the one database: two processes' dispatchers."""
    inner = [make_writer(engine), make_writer(engine)]
    yield [CountingWriter(w) for w in inner]
    for w in inner:
        await w.close()


def _budget(writer: CountingWriter, mps: float) -> Budget:
    return Budget(writer, Limits(mps=mps, api_per_5s=0, list_per_minute=0), shared=True)  # type: ignore[arg-type]


async def _send_times(budget: Budget, callers: int, started: float) -> list[float]:
    """`callers` sends in flight at once, each waiting for its token: when each got it."""
    times: list[float] = []

    async def one() -> None:
        await budget.before_send()
        times.append(time.monotonic() - started)

    await asyncio.gather(*(one() for _ in range(callers)))
    return times


def _over_the_rate(times: list[float], rate: float, capacity: float) -> list[tuple[float, int]]:
    """Moments by which more tokens were handed out than the bucket allows (a full bucket at
    the start, then `rate` a second), with a token's slack for the clocks' rounding."""
    return [(t, n) for n, t in enumerate(sorted(times), start=1) if n > capacity + rate * t + 1]


async def test_callers_waiting_at_once_share_transactions(
    writers: list[CountingWriter],
) -> None:
    writer = writers[0]
    budget = _budget(writer, mps=40)
    times = await _send_times(budget, 60, time.monotonic())
    assert len(times) == 60
    assert _over_the_rate(times, 40, 40) == []
    # 40 at once from the full bucket, then the rest as the bucket refills: far fewer
    # transactions than callers (one each before); one more made the bucket's row.
    assert writer.transactions < 30, writer.transactions
    assert max(times) >= 20 / 40 * 0.9  # the 20 beyond the burst waited for the refill


async def test_two_processes_never_take_more_than_the_bucket_together(
    writers: list[CountingWriter], engine: AsyncEngine
) -> None:
    a, b = (_budget(w, mps=20) for w in writers)
    started = time.monotonic()
    first, second = await asyncio.gather(_send_times(a, 25, started), _send_times(b, 25, started))
    assert len(first) == len(second) == 25
    assert _over_the_rate(first + second, 20, 20) == []
    assert max(first + second) >= 30 / 20 * 0.9
    async with engine.connect() as conn:
        names = (await conn.execute(select(rate_limits.c.name))).scalars().all()
    assert names == ["plivo"]  # one bucket row, shared


async def test_a_cancelled_caller_leaves_no_one_waiting(writers: list[CountingWriter]) -> None:
    budget = _budget(writers[0], mps=2)
    await _send_times(budget, 2, time.monotonic())  # the bucket is empty now
    waiting = [asyncio.ensure_future(budget.before_send()) for _ in range(3)]
    await asyncio.sleep(0.05)
    waiting[0].cancel()
    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*waiting[1:]), timeout=10)
    assert time.monotonic() - started < 5
    assert waiting[0].cancelled()


async def test_a_database_error_reaches_every_waiting_caller_then_passes(
    writers: list[CountingWriter],
) -> None:
    writer = writers[0]
    budget = _budget(writer, mps=1000)
    await budget.before_send()  # the row is made
    writer.fail = RuntimeError("database lost")
    results: list[Any] = await asyncio.gather(
        *(budget.before_send() for _ in range(5)), return_exceptions=True
    )
    assert [str(r) for r in results] == ["database lost"] * 5
    writer.fail = None
    await asyncio.wait_for(asyncio.gather(*(budget.before_send() for _ in range(5))), 10)
