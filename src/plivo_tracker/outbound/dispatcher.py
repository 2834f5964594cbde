"""The dispatcher: claims due outbox rows, paces them to PLIVO_MPS, sends each outside any
transaction, and records the outcome through the retry policy.

`run_once()` is one pass (tests call it); `run()` loops, woken early by `wake()` on each submit.
"""

from __future__ import annotations

import asyncio
import functools
import random
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import Connection
from sqlalchemy.engine import Dialect

from plivo_tracker.db.dialect import shared_rate_limit
from plivo_tracker.db.engine import Writer
from plivo_tracker.outbound import repository as repo
from plivo_tracker.outbound.ratelimit import Bucket, TokenBucket
from plivo_tracker.outbound.repository import Claimed
from plivo_tracker.outbound.retry import Action, Failure, RetryPolicy
from plivo_tracker.plivo.client import PlivoClient, SendError

log = structlog.get_logger(__name__)

LEASE = timedelta(minutes=2)
RECONCILE_GRACE = 60.0
UNAUTHORIZED_PAUSE = 60.0
RECONCILE_PER_PASS = 5  # List Messages allows 20 requests/minute


class Dispatcher:
    def __init__(
        self,
        writer: Writer,
        client: PlivoClient,
        *,
        callback_url: str,
        mps: float | None,
        shared_bucket: bool,
        policy: RetryPolicy | None = None,
        batch: int = 100,
        poll_interval: float = 1.0,
        reconcile_grace: float = RECONCILE_GRACE,
        concurrency: int = 4,
    ) -> None:
        self._grace = reconcile_grace
        self._writer = writer
        self._client = client
        self._callback_url = callback_url
        self._policy = policy or RetryPolicy()
        self._batch = batch
        self._poll = poll_interval
        self._owner = f"dispatcher-{secrets.token_hex(4)}"
        self._mps = mps
        self._shared = shared_bucket
        self._bucket = TokenBucket(rate=mps, capacity=max(1.0, mps)) if mps else None
        self._state: Bucket | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._paused_until = 0.0
        self._rng = random.Random()
        self._in_flight = asyncio.Semaphore(concurrency)

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping:
            try:
                sent = await self.run_once()
            except Exception:  # noqa: BLE001 - the loop must survive a bad pass; logged
                log.exception("dispatcher.pass_failed")
                sent = 0
            if sent == 0 and not self._stopping:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self._poll)
                except TimeoutError:
                    pass

    async def run_once(self) -> int:
        """Claim due rows and attempt each once; returns how many were attempted."""
        if time.monotonic() < self._paused_until:
            return 0
        now = datetime.now(UTC)
        await self._writer.run(functools.partial(repo.expire_leases, now=now))
        done = await self._reconcile(now)
        claimed = await self._writer.run(
            lambda conn: repo.claim_due(conn, now, self._owner, LEASE, self._batch)
        )
        if not claimed:
            return done
        # Sent concurrently (bounded, paced); all outcomes recorded in one transaction.
        outcomes = await asyncio.gather(*(self._attempt(item) for item in claimed))

        accepted = [o for o in outcomes if isinstance(o, tuple)]
        failures = [o for o in outcomes if not isinstance(o, tuple)]

        def record(conn: Connection) -> None:
            repo.record_accepted_many(conn, accepted, datetime.now(UTC))
            for apply in failures:
                apply(conn)

        await self._writer.run(record)
        return done + len(claimed)

    async def _reconcile(self, now: datetime) -> int:
        """Ambiguous sends, once their grace has passed: look the message up at Plivo (List
        Messages, 20 requests/minute: a few per pass) and adopt it, or allow a resend."""
        claimed = await self._writer.run(
            lambda conn: repo.claim_due(
                conn, now, self._owner, LEASE, RECONCILE_PER_PASS, "reconcile"
            )
        )
        for item in claimed:
            since = (item.first_attempt_at or now) - timedelta(minutes=1)
            try:
                found = await self._client.list_messages(
                    message_direction="outbound",
                    to_number=item.to.lstrip("+"),
                    message_time__gte=since.strftime("%Y-%m-%d %H:%M:%S"),
                )
            except SendError as exc:
                log.warning("outbox.reconcile_failed", message_id=item.message_id, error=str(exc))
                await self._writer.run(
                    functools.partial(
                        repo.record_ambiguous,
                        c=item,
                        started=now,
                        now=now,
                        detail=str(exc),
                        grace=self._grace,
                    )
                )
                continue
            uuids = [m["message_uuid"] for m in found]
            taken = await self._writer.run(functools.partial(repo.known_uuids, uuids=uuids))
            fresh = [u for u in uuids if u not in taken]
            stamp = datetime.now(UTC)
            if fresh:
                uuid = fresh[-1]  # newest first: the oldest unclaimed one is ours
                await self._writer.run(
                    functools.partial(
                        repo.record_accepted, c=item, message_uuid=uuid, started=now, now=stamp
                    )
                )
                log.info("outbox.reconciled", message_id=item.message_id, message_uuid=uuid)
            else:
                await self._writer.run(functools.partial(repo.record_not_found, c=item, now=stamp))
                log.info("outbox.reconcile_not_found", message_id=item.message_id)
        return len(claimed)

    async def _pace(self) -> None:
        if self._bucket is None or self._mps is None:
            return
        while True:
            if self._shared:
                take = functools.partial(
                    repo.take_shared_tokens, name="plivo", rate=self._mps, now=time.time(), want=1.0
                )
                wait = await self._writer.run(take)
            else:
                now = time.monotonic()
                state = self._state or self._bucket.full(now)
                self._state, wait = self._bucket.take(state, now)
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    async def _attempt(
        self, item: Claimed
    ) -> tuple[Claimed, str, datetime] | Callable[[Connection], None]:
        """Send one message (outside any transaction); returns (item, uuid, started) when
        Plivo accepted it, else how to record the failure."""
        async with self._in_flight:
            await self._pace()
            started = datetime.now(UTC)
            try:
                accepted = await self._client.send(
                    dst=item.to.lstrip("+"),
                    src=None if item.src.startswith("powerpack:") else item.src,
                    powerpack_uuid=item.src.removeprefix("powerpack:")
                    if item.src.startswith("powerpack:")
                    else None,
                    text=item.text,
                    type_=item.type,
                    media_urls=item.media_urls,
                    url=self._callback_url,
                )
            except SendError as exc:
                return self._failed(item, started, exc)
        uuid = accepted.message_uuids[0]
        log.debug("outbox.sent", message_id=item.message_id, message_uuid=uuid)
        return (item, uuid, started)

    def _failed(
        self, item: Claimed, started: datetime, exc: SendError
    ) -> Callable[[Connection], None]:
        now = datetime.now(UTC)
        elapsed = (now - (item.first_attempt_at or started)).total_seconds()
        decision = self._policy.decide(
            exc.failure, item.attempts + 1, elapsed, self._rng.random(), exc.retry_after
        )
        detail = f"{exc.failure.value}: {exc.detail}"[:500]
        log.warning(
            "outbox.attempt_failed",
            message_id=item.message_id,
            failure=exc.failure.value,
            action=decision.action.value,
            http_status=exc.status,
        )
        if exc.failure == Failure.UNAUTHORIZED:
            # Wrong credentials fail every message: stop dispatching for a while and alert.
            self._paused_until = time.monotonic() + UNAUTHORIZED_PAUSE
            log.error("dispatcher.unauthorized", pause_seconds=UNAUTHORIZED_PAUSE)
        if decision.action == Action.RETRY:
            return functools.partial(
                repo.record_retry,
                c=item,
                started=started,
                now=now,
                delay=decision.delay,
                status=exc.status,
                detail=detail,
            )
        if decision.action == Action.RECONCILE:
            return functools.partial(
                repo.record_ambiguous,
                c=item,
                started=started,
                now=now,
                detail=detail,
                grace=self._grace,
            )
        return functools.partial(
            repo.record_failed, c=item, started=started, now=now, status=exc.status, detail=detail
        )


def make_dispatcher(
    writer: Writer,
    client: PlivoClient,
    *,
    dialect: Dialect,
    callback_url: str,
    mps: float | None,
    policy: RetryPolicy | None = None,
    poll_interval: float = 1.0,
) -> Dispatcher:
    return Dispatcher(
        writer,
        client,
        callback_url=callback_url,
        mps=mps,
        shared_bucket=shared_rate_limit(dialect),
        policy=policy,
        poll_interval=poll_interval,
    )
