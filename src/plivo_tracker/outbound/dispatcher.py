"""The dispatcher: claims due outbox rows, paces them to Plivo's limits, sends each outside any
transaction, and records the outcome through the retry policy.

Sent at most once (docs/adr/0008): an ambiguous outcome is looked up (List Messages, the pure
rule in reconcile.py) before any resend; a refused account or API address (401/403/404/405)
pauses dispatching for every worker, leaves messages queued, and is probed until it works.

`run_once()` is one pass (tests call it); `run()` loops, woken early by `wake()` on each submit.
"""

from __future__ import annotations

import asyncio
import functools
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Connection
from sqlalchemy.engine import Dialect

from plivo_tracker import metrics
from plivo_tracker.db.dialect import shared_rate_limit
from plivo_tracker.db.engine import Writer, database_lost
from plivo_tracker.optouts import repository as optout_repo
from plivo_tracker.outbound import repository as repo
from plivo_tracker.outbound.budget import Budget, Limits
from plivo_tracker.outbound.reconcile import Expected, Verdict, list_filters, match
from plivo_tracker.outbound.repository import Claimed
from plivo_tracker.outbound.retry import PAUSING, Action, Failure, RetryPolicy
from plivo_tracker.plivo.client import PlivoClient, SendError, next_page_params
from plivo_tracker.retention.content import erase_unneeded
from plivo_tracker.retention.rules import Erasure

log = structlog.get_logger(__name__)

# Why a queued message failed without being sent (its timeline and `error_detail`).
OPTED_OUT = "opted_out: the recipient opted out before it was sent"

LEASE = timedelta(minutes=2)
# A pass's outcomes are written again this often, for this long, while the database is lost.
RECORD_RETRY, RECORD_PATIENCE = 0.5, 15.0
# A lookup of an ambiguous send waits this long (RECONCILE_AFTER_SECONDS), so that a message
# Plivo created shows in List Messages before we conclude it does not exist.
RECONCILE_GRACE = 120.0
RECONCILE_PER_PASS = 5  # List Messages allows 20 requests/minute
RECONCILE_MAX_LOOKUPS = 6  # undecided lookups before the message waits for an operator
RECONCILE_MAX_PAGES = 5  # pages of one lookup (20 MDRs each)
PROBE_FIRST, PROBE_CAP = 5.0, 300.0  # backoff of the pause probe, seconds
DEFAULT_CONCURRENCY = 16  # sends in flight (PLIVO_CONCURRENCY)


def probe_delay(probes: int) -> float:
    """Seconds before the next pause probe after `probes` failed ones (5 s doubling to 5 min)."""
    return min(PROBE_CAP, PROBE_FIRST * 2.0 ** min(probes, 16))


@dataclass(frozen=True, slots=True)
class Sent:
    item: Claimed
    message_uuid: str
    started: datetime
    api_id: str | None


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
        max_lookups: int = RECONCILE_MAX_LOOKUPS,
        concurrency: int = DEFAULT_CONCURRENCY,
        limits: Limits | None = None,
        log_default: str = "true",
        erasure: Erasure | None = None,
        opt_out_exemption: bool = False,
    ) -> None:
        # OPT_OUT_TRANSACTIONAL_EXEMPTION: transactional messages may reach opted-out numbers.
        self._opt_out_exemption = opt_out_exemption
        self._log = log_default  # Plivo's `log` when a send does not say (PLIVO_LOG)
        self._erasure = erasure  # STORE_MESSAGE_TEXT=false: texts go once they are sent
        self._grace = reconcile_grace
        self._max_lookups = max_lookups
        self._writer = writer
        self._client = client
        self._callback_url = callback_url
        self._policy = policy or RetryPolicy()
        self._batch = batch
        self._poll = poll_interval
        self._owner = f"dispatcher-{secrets.token_hex(4)}"
        base = limits or Limits()
        self.budget = Budget(
            writer,
            Limits(mps=mps, api_per_5s=base.api_per_5s, list_per_minute=base.list_per_minute),
            shared=shared_bucket,
        )
        self._wake = asyncio.Event()
        self._stopping = False
        self._rng = random.Random()
        self.concurrency = concurrency
        self._in_flight = asyncio.Semaphore(concurrency)

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Passes until `stop()`; it may be run again afterwards (a leader regained)."""
        try:
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
        finally:
            self._stopping = False  # this stop is spent

    async def run_once(self) -> int:
        """Claim due rows and attempt each once; returns how many were attempted."""
        now = datetime.now(UTC)
        state = await self._writer.run(repo.pause_state)
        metrics.DISPATCH_PAUSED.set(1 if state.paused else 0)
        if state.paused and not await self._probe(state, now):
            return 0
        await self._writer.run(functools.partial(repo.expire_leases, now=now))
        done = await self._reconcile(now)
        claimed, refused = await self._writer.run(lambda conn: self._claim_sendable(conn, now))
        for c in refused:  # counted once committed (`Writer.run` may run a claim again)
            metrics.OPTED_OUT_AT_SEND.inc()
            log.info("outbox.opted_out", message_id=c.message_id, to=c.to)
        if not claimed:
            return done
        # Sent concurrently (bounded, paced); all outcomes recorded in one transaction.
        outcomes = await asyncio.gather(*(self._attempt(item) for item in claimed))

        def record(conn: Connection) -> None:
            now = datetime.now(UTC)
            mine = repo.still_sending(conn, [c.message_id for c in claimed], self._owner)
            accepted = [
                (o.item, o.message_uuid, o.started, o.api_id)
                for o in outcomes
                if isinstance(o, Sent) and o.item.message_id in mine
            ]
            repo.record_accepted_many(conn, accepted, now)
            for c, o in zip(claimed, outcomes, strict=True):
                if not isinstance(o, Sent) and c.message_id in mine:
                    o(conn)
            erase_unneeded(conn, sorted(mine), now, self._erasure)

        await self._record(record, len(claimed))
        return done + len(claimed)

    async def _record(self, work: Callable[[Connection], None], count: int) -> None:
        """Write a pass's outcomes. While the database is lost (a restart), keep them and try
        again for up to RECORD_PATIENCE: this process knows what Plivo answered, whereas
        rows left leased are looked up only once their lease has run out (LEASE)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + RECORD_PATIENCE
        while True:
            try:
                await self._writer.run(work)
                return
            except Exception as exc:
                if not database_lost(exc) or loop.time() >= give_up:
                    raise
                log.warning("dispatcher.record_retry", messages=count, error=repr(exc))
            await asyncio.sleep(RECORD_RETRY)

    def _claim_sendable(
        self, conn: Connection, now: datetime
    ) -> tuple[list[Claimed], list[Claimed]]:
        """Claim due messages: (to send, refused). One whose recipient opted out since it was
        queued (a STOP while it waited, or before a resend's turn) fails here with the reason
        and never reaches Plivo, unless it is transactional and the operator allows that
        exemption."""
        claimed = repo.claim_due(conn, now, self._owner, LEASE, self._batch)
        checked = [c for c in claimed if not (c.transactional and self._opt_out_exemption)]
        stopped = optout_repo.opted_out_among(conn, [c.to for c in checked]) if checked else set()
        refused = [c for c in checked if c.to in stopped]
        for c in refused:
            repo.record_failed(conn, c, now, now, None, OPTED_OUT)
        refused_ids = {c.message_id for c in refused}
        return [c for c in claimed if c.message_id not in refused_ids], refused

    # ---- pausing ------------------------------------------------------------------------------

    async def _probe(self, state: repo.PauseState, now: datetime) -> bool:
        """While paused: an automatic pause is probed with one authenticated read when due;
        returns True when dispatching may go on (the probe worked and the pause is over)."""
        if state.paused_by != "auto":
            return False  # an operator's pause ends only with `dispatch resume`
        if state.next_probe_at is not None and now < state.next_probe_at:
            return False
        try:
            await self.budget.before_read()
            await self._client.get_account()
        except SendError as exc:
            next_at = now + timedelta(seconds=probe_delay(state.probes + 1))
            await self._writer.run(
                functools.partial(
                    repo.probe_failed, now=now, next_probe_at=next_at, reason=_pause_reason(exc)
                )
            )
            log.info("dispatch.probe_failed", error=str(exc), next_probe_at=next_at.isoformat())
            return False
        resumed = await self._writer.run(
            functools.partial(repo.resume, now=datetime.now(UTC), only_auto=True)
        )
        if resumed:
            metrics.DISPATCH_PAUSED.set(0)
            log.warning("dispatch.resumed", after_probes=state.probes + 1)
        return True

    async def _pause(self, exc: SendError) -> None:
        reason = _pause_reason(exc)
        now = datetime.now(UTC)
        first = await self._writer.run(
            functools.partial(
                repo.set_paused,
                by="auto",
                reason=reason,
                now=now,
                next_probe_at=now + timedelta(seconds=PROBE_FIRST),
            )
        )
        metrics.DISPATCH_PAUSED.set(1)
        if first:  # one error line per pause, not one per message
            log.error("dispatch.paused", reason=reason, api_id=exc.api_id, http_status=exc.status)

    # ---- reconciling ambiguous sends ------------------------------------------------------------

    async def _reconcile(self, now: datetime) -> int:
        """Ambiguous sends, once their grace has passed: look each up with List Messages and
        adopt what it finds, allow a resend when it positively finds nothing, else ask again
        later (and after enough undecided lookups, leave it to an operator as `unknown`)."""
        claimed = await self._writer.run(
            lambda conn: repo.claim_due(
                conn, now, self._owner, LEASE, RECONCILE_PER_PASS, "reconcile"
            )
        )
        for item in claimed:
            await self._reconcile_one(item)
        return len(claimed)

    async def _reconcile_one(self, item: Claimed) -> None:
        started = datetime.now(UTC)
        last = await self._writer.run(
            functools.partial(repo.last_ambiguous_at, message_id=item.message_id)
        )
        expected = Expected(
            to=item.to,
            src=item.src,
            type=item.type,
            segments=item.segments,
            # A worker that died holding the lease left no attempt time: from the creation.
            first_attempt=item.first_attempt_at or item.created_at or started,
            last_attempt=last or started,
        )
        try:
            mdrs, complete, api_ids = await self._lookup(expected)
        except SendError as exc:
            counted = exc.failure != Failure.RATE_LIMITED  # 429: our budget, not the answer
            await self._undecided(item, f"lookup failed: {exc}", counted, exc.retry_after)
            return
        uuids = [str(m.get("message_uuid")) for m in mdrs if m.get("message_uuid")]
        owned = await self._writer.run(
            functools.partial(repo.owned_uuids, uuids=uuids, except_id=item.message_id)
        )
        result = match(mdrs, expected, owned, complete=complete)
        now = datetime.now(UTC)
        api_id = api_ids[0] if api_ids else None
        if result.verdict == Verdict.FOUND and result.message_uuid:
            uuid = result.message_uuid

            def found(conn: Connection) -> None:
                repo.record_accepted(conn, item, uuid, started, now, api_id, "reconciled")
                erase_unneeded(conn, [item.message_id], now, self._erasure)

            await self._writer.run(found)
            metrics.RECONCILED.labels(outcome="found").inc()
            log.info("outbox.reconciled", message_id=item.message_id, message_uuid=uuid)
        elif result.verdict == Verdict.NOT_FOUND:
            await self._writer.run(functools.partial(repo.record_not_found, c=item, now=now))
            metrics.RECONCILED.labels(outcome="not_found").inc()
            log.info("outbox.reconcile_not_found", message_id=item.message_id, api_id=api_id)
        else:
            await self._undecided(item, result.reason, True, None)

    async def _lookup(self, expected: Expected) -> tuple[list[dict[str, Any]], bool, list[str]]:
        """Every page of one List Messages query (up to RECONCILE_MAX_PAGES)."""
        params: dict[str, str] | None = list_filters(expected)
        mdrs: list[dict[str, Any]] = []
        api_ids: list[str] = []
        pages = 0
        while params is not None and pages < RECONCILE_MAX_PAGES:
            await self.budget.before_list()
            page = await self._client.list_page(params)
            pages += 1
            mdrs.extend(page["objects"])
            if isinstance(page.get("api_id"), str):
                api_ids.append(page["api_id"])
            params = next_page_params(page["meta"])
        return mdrs, params is None, api_ids

    async def _undecided(
        self, item: Claimed, reason: str, counted: bool, retry_after: float | None
    ) -> None:
        lookups = item.lookups + (1 if counted else 0)
        retry_in: float | None = max(self._grace, retry_after or 0.0) * min(2**item.lookups, 8)
        if lookups >= self._max_lookups:
            retry_in = None
        await self._writer.run(
            functools.partial(
                repo.record_lookup_undecided,
                c=item,
                now=datetime.now(UTC),
                detail=reason[:500],
                retry_in=retry_in,
                counted=counted,
            )
        )
        if retry_in is None:
            metrics.RECONCILED.labels(outcome="unknown").inc()
            log.error(
                "outbox.outcome_unknown",
                message_id=item.message_id,
                reason=reason,
                lookups=lookups,
                resolve=f"plivo-tracker resolve {item.message_id} --adopt UUID | --resend",
            )
        else:
            log.warning("outbox.reconcile_undecided", message_id=item.message_id, reason=reason)

    # ---- sending ------------------------------------------------------------------------------

    async def _attempt(self, item: Claimed) -> Sent | Callable[[Connection], None]:
        """Send one message (outside any transaction); returns what was sent, else how to
        record the failure."""
        async with self._in_flight:
            await self.budget.before_send()
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
                    options={"log": self._log, **(item.options or {})},
                )
            except SendError as exc:
                return await self._failed(item, started, exc)
        uuid = accepted.message_uuids[0]
        # Plivo's api_id is what its support asks for: one line per accepted send.
        log.info(
            "outbox.sent", message_id=item.message_id, message_uuid=uuid, api_id=accepted.api_id
        )
        return Sent(item, uuid, started, accepted.api_id)

    async def _failed(
        self, item: Claimed, started: datetime, exc: SendError
    ) -> Callable[[Connection], None]:
        now = datetime.now(UTC)
        detail = f"{exc.failure.value}: {exc.detail}"[:500]
        common: dict[str, Any] = {"c": item, "started": started, "now": now, "api_id": exc.api_id}
        if exc.failure in PAUSING:
            if exc.failure == Failure.FORBIDDEN and await self._account_works():
                # 403 with working credentials: this message's destination (Geo Permissions).
                log.warning(
                    "outbox.refused", message_id=item.message_id, api_id=exc.api_id, reason=detail
                )
                return functools.partial(
                    repo.record_failed, **common, status=exc.status, detail=detail
                )
            await self._pause(exc)
            return functools.partial(repo.record_paused, **common, status=exc.status, detail=detail)
        elapsed = (now - (item.first_attempt_at or started)).total_seconds()
        decision = self._policy.decide(
            exc.failure, item.attempts + 1, elapsed, self._rng.random(), exc.retry_after
        )
        log.warning(
            "outbox.attempt_failed",
            message_id=item.message_id,
            failure=exc.failure.value,
            action=decision.action.value,
            http_status=exc.status,
            api_id=exc.api_id,
        )
        if decision.action == Action.RETRY:
            return functools.partial(
                repo.record_retry, **common, delay=decision.delay, status=exc.status, detail=detail
            )
        if decision.action == Action.RECONCILE:
            return functools.partial(
                repo.record_ambiguous, **common, detail=detail, grace=self._grace, status=exc.status
            )
        return functools.partial(repo.record_failed, **common, status=exc.status, detail=detail)

    async def _account_works(self) -> bool:
        try:
            await self.budget.before_read()
            await self._client.get_account()
        except SendError:
            return False
        return True


def _pause_reason(exc: SendError) -> str:
    what = {
        Failure.UNAUTHORIZED: "Plivo refused the credentials (401): check PLIVO_AUTH_ID and "
        "PLIVO_AUTH_TOKEN",
        Failure.FORBIDDEN: "Plivo refused the account (403): check the API IP allow-list",
        Failure.MISCONFIGURED: f"the Message API answered {exc.status}: check PLIVO_AUTH_ID and "
        "PLIVO_API_URL",
    }.get(exc.failure, f"Plivo: {exc.failure.value}")
    return f"{what} ({exc.detail[:200]})"


def make_dispatcher(
    writer: Writer,
    client: PlivoClient,
    *,
    dialect: Dialect,
    callback_url: str,
    mps: float | None,
    policy: RetryPolicy | None = None,
    poll_interval: float = 1.0,
    reconcile_grace: float = RECONCILE_GRACE,
    max_lookups: int = RECONCILE_MAX_LOOKUPS,
    limits: Limits | None = None,
    log_default: str = "true",
    erasure: Erasure | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    opt_out_exemption: bool = False,
) -> Dispatcher:
    return Dispatcher(
        writer,
        client,
        callback_url=callback_url,
        mps=mps,
        shared_bucket=shared_rate_limit(dialect),
        policy=policy,
        poll_interval=poll_interval,
        reconcile_grace=reconcile_grace,
        max_lookups=max_lookups,
        limits=limits,
        log_default=log_default,
        erasure=erasure,
        concurrency=concurrency,
        opt_out_exemption=opt_out_exemption,
    )
