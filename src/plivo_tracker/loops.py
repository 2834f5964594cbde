"""Background jobs of `serve` and `worker`: a pass every interval, and leases that let one
process at a time do a job that every process runs (the sweeper, the purge)."""

from __future__ import annotations

import asyncio
import functools
import secrets
from datetime import datetime, timedelta

import structlog

from plivo_tracker.db.engine import Writer
from plivo_tracker.outbound import repository as repo

log = structlog.get_logger(__name__)


class Lease:
    """A named row in `leases`: whoever holds it, until when. Each process has its own owner
    name, so a restarted process is a new owner that waits for the old lease to run out."""

    def __init__(self, writer: Writer, name: str, ttl: timedelta) -> None:
        self._writer = writer
        self.name = name
        self.ttl = ttl
        self.owner = f"{name}-{secrets.token_hex(4)}"

    async def hold(self, now: datetime) -> bool:
        """Become or stay the holder for `ttl` (a leader: the sweeper)."""
        return await self._take(now, renew=True)

    async def take_when_due(self, now: datetime) -> bool:
        """Take it only once it has run out, whoever held it: a job done once per `ttl` by
        whichever process comes first (the purge)."""
        return await self._take(now, renew=False)

    async def _take(self, now: datetime, renew: bool) -> bool:
        take = functools.partial(
            repo.take_lease, name=self.name, owner=self.owner, now=now, ttl=self.ttl, renew=renew
        )
        return await self._writer.run(take)


class PeriodicLoop:
    """`run_once()` every `interval` seconds until `stop()`. A pass that fails is logged
    (`<name>.pass_failed`) and the loop goes on; tests call `run_once()` directly."""

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
        while not self._stopping.is_set():
            try:
                await self.run_once()
            except Exception:  # noqa: BLE001 - the loop must survive a bad pass; logged
                log.exception(f"{self.name}.pass_failed")
            try:
                await asyncio.wait_for(self._stopping.wait(), self.interval)
            except TimeoutError:
                pass

    async def run_once(self) -> object:
        raise NotImplementedError
