"""Plivo's request limits, kept by every caller: PLIVO_MPS for sends, the general API limit
(300 requests in 5 s) for every call, and List Messages' 20 requests a minute.

The List limit is per account, so it always lives in the database (`rate_limits` rows), shared
by every worker and by `plivo-tracker sweep`. The MPS and general limits are shared the same way
on PostgreSQL (several dispatchers); on SQLite one process dispatches, so they live in memory.
One transaction takes every token a call needs, or none; callers waiting at once for the same
shared buckets are served by one transaction together.
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass

from plivo_tracker.db.engine import Writer
from plivo_tracker.outbound import repository as repo
from plivo_tracker.outbound.ratelimit import Bucket, TokenBucket, take_up_to


@dataclass(frozen=True, slots=True)
class Limits:
    mps: float | None = 5.0  # sends per second (None: unpaced)
    api_per_5s: int = 300  # every call (0: unlimited)
    list_per_minute: int = 20  # List Messages (0: unlimited)

    def api(self) -> tuple[str, float, float] | None:
        if self.api_per_5s <= 0:
            return None
        return ("plivo-api", *window_bucket(self.api_per_5s, 5.0))

    def sends(self) -> tuple[str, float, float] | None:
        if not self.mps:
            return None
        return ("plivo", self.mps, max(1.0, self.mps))

    def lists(self) -> tuple[str, float, float] | None:
        if self.list_per_minute <= 0:
            return None
        return ("plivo-list", *window_bucket(self.list_per_minute, 60.0))


def window_bucket(limit: int, window: float) -> tuple[float, float]:
    """(rate, capacity) of a token bucket that never lets more than `limit` requests into any
    rolling `window` seconds, as Plivo counts them.

    A bucket lets through at most capacity + rate × window in a window, so a bucket of
    `limit` tokens refilled at limit/window per second would allow twice the limit (measured:
    599 in 5 s, bench/reconcile.py). A fifth of the limit as the burst and the rest spread over
    the window keeps the sum at the limit: 60 at once then 48/s for 300 per 5 s; 4 at once
    then 16 a minute for List's 20 per minute.
    """
    capacity = max(1.0, float(limit // 5))
    return (limit - capacity) / window, capacity


# While callers wait for the bucket to refill, it is asked at most this often (seconds): at a
# high PLIVO_MPS the tokens of 20 ms go out together instead of one transaction each. The rate
# holds either way; only sends within those 20 ms leave together.
REFILL_STEP = 0.02


class Budget:
    def __init__(self, writer: Writer, limits: Limits, *, shared: bool) -> None:
        self._writer = writer
        self.limits = limits
        self._shared = shared
        self._local: dict[str, tuple[TokenBucket, Bucket | None]] = {}
        self._made: set[str] = set()  # shared buckets whose rows this process has made
        # Shared buckets: the callers waiting for the same buckets, and the task serving them.
        self._waiting: dict[tuple[str, ...], list[asyncio.Future[None]]] = {}
        self._serving: dict[tuple[str, ...], asyncio.Task[None]] = {}

    async def before_send(self) -> None:
        await self._take([self.limits.sends(), self.limits.api()], shared=self._shared)

    async def before_read(self) -> None:
        """Get Message, Get Account."""
        await self._take([self.limits.api()], shared=self._shared)

    async def before_list(self) -> None:
        await self._take([self.limits.lists()], shared=True)
        await self._take([self.limits.api()], shared=self._shared)

    async def _take(self, wanted: list[tuple[str, float, float] | None], *, shared: bool) -> None:
        buckets = [b for b in wanted if b is not None]
        if not buckets:
            return
        if shared:
            await self._take_shared(buckets)
            return
        while True:
            wait = self._take_local(buckets, time.monotonic())
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    async def _take_shared(self, buckets: list[tuple[str, float, float]]) -> None:
        """Wait in line for one token of each of `buckets`. The callers waiting at once (the
        dispatcher's sends in flight) are served together: one transaction takes as many
        tokens as there are callers, up to what the buckets hold, where each caller took its
        own before: that transaction per send was most of a send's CPU (docs/benchmarks.md,
        "Tokens by the handful")."""
        key = tuple(sorted(b[0] for b in buckets))
        mine = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(mine)
        serving = self._serving.get(key)
        if serving is None or serving.done():
            self._serving[key] = asyncio.create_task(self._serve(key, buckets))
        await mine

    async def _serve(self, key: tuple[str, ...], buckets: list[tuple[str, float, float]]) -> None:
        line = self._waiting[key]  # callers who come meanwhile join it
        try:
            while True:
                line[:] = [f for f in line if not f.done()]  # gone: cancelled
                if not line:
                    return
                await self._make_rows(buckets)
                want = len(line)
                take = functools.partial(
                    repo.take_shared_tokens, buckets=buckets, now=time.time(), want=want
                )
                # Not durable (`background`: the COMMIT does not wait for the disk): a crash
                # can at most give back the last tokens taken, a moment's burst over the rate,
                # while a flush per send held the shared row's lock through an fsync and made
                # it the limit of sending (docs/benchmarks.md, "Scale-out").
                got, wait = await self._writer.run(take, background=True)
                for f in line[:got]:
                    if not f.done():  # a caller cancelled since: its token goes unused
                        f.set_result(None)
                del line[:got]
                if got < want:  # the rest wait for the refill, a handful at a time
                    await asyncio.sleep(max(wait, REFILL_STEP))
        except BaseException as exc:
            for f in line:  # the database is lost, or this server stops: every caller hears
                if f.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    f.cancel()
                else:
                    f.set_exception(exc)
            line.clear()
            if not isinstance(exc, Exception):
                raise

    async def _make_rows(self, buckets: list[tuple[str, float, float]]) -> None:
        """The shared buckets' rows, made once per process in a transaction of their own
        (`repo.ensure_rows`: concurrent first sends deadlocked on MariaDB otherwise)."""
        new = [b for b in buckets if b[0] not in self._made]
        if new:
            make = functools.partial(repo.make_buckets, buckets=new, now=time.time())
            await self._writer.run(make)
            self._made.update(b[0] for b in new)

    def _take_local(self, buckets: list[tuple[str, float, float]], now: float) -> float:
        """One token of each bucket kept in this process: 0.0, or the seconds to wait."""
        states: list[tuple[TokenBucket, Bucket]] = []
        for name, rate, capacity in buckets:
            bucket, state = self._local.get(name) or (TokenBucket(rate, capacity), None)
            states.append((bucket, state or bucket.full(now)))
        got, after, wait = take_up_to(states, now, 1)
        if got:
            for (name, _, _), (bucket, _), state in zip(buckets, states, after, strict=True):
                self._local[name] = (bucket, state)
        return wait
