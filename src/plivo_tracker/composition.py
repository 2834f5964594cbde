"""The composition root: the one place that builds a process's parts from Settings, runs its
background loops and tears everything down in reverse order.

Every entry point opens what it needs here instead of wiring parts itself: `serve` (through
`create_app`'s lifespan, app.py), `worker`, `spool replay`, `sweep`, `db upgrade`, `doctor`, and
the operator commands that write to the database directly (`dispatch pause|resume|status`,
`resolve`).

    open_engine      the engine (migrated to head when asked); disposed on exit
    open_store       + the writer every write of the process goes through
    build_sending    the Plivo client (real, or the in-process simulator), dispatcher, sweeper
    open_service     all of `serve`: store, reader, spool, group committer and its spool
                     replayer, sending, live hub, LISTEN; the projector, the dispatcher
                     (with sweeper and purge) and the demo loops, each under a leader lease
                     (loops.leading); yields the routes' Context
    open_worker      all of `worker`: store, sending, LISTEN; `run()` runs the dispatcher,
                     sweeper and purge (the journal is applied by `serve`'s projector)
    on_database, replay_spool, sweep_once, upgrade_database    the one-shot commands
    copy_between     `db copy`: the source read-only and the target, each its own engine

Simulator mode (no PLIVO_AUTH_ID/TOKEN): the client talks to the simulator's Message API in
process, and the simulator posts genuinely signed callbacks to PUBLIC_BASE_URL over real HTTP,
signed with this process's random simulator token, which the verifier accepts. Signature checks
are never switched off.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import httpx
import structlog
from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine

from plivo_tracker.config import Settings
from plivo_tracker.db.copy import (
    CopyFailed,
    CopyRefused,
    CopyResult,
    Progress,
    check_source,
    copy_database,
    same_database,
)
from plivo_tracker.db.dialect import EVENTS_CHANNEL, JOURNAL_CHANNEL, OUTBOX_CHANNEL
from plivo_tracker.db.engine import (
    Reader,
    Writer,
    make_engine,
    make_reader,
    make_writer,
    sqlite_path,
)
from plivo_tracker.db.migrate import current_revision, upgrade, upgrade_sqlite
from plivo_tracker.demo import demo_job
from plivo_tracker.inbound.committer import GroupCommitter
from plivo_tracker.inbound.routes import CALLBACK_PATH, INBOUND_PATH
from plivo_tracker.inbound.spool import Spool
from plivo_tracker.live.hub import LiveHub, database_hub
from plivo_tracker.live.notify import Listener
from plivo_tracker.loops import Leadership, leading
from plivo_tracker.messages.projector import Projector
from plivo_tracker.optouts import repository as optout_repo
from plivo_tracker.outbound import repository as outbound_repo
from plivo_tracker.outbound.budget import Limits
from plivo_tracker.outbound.dispatcher import Dispatcher, make_dispatcher
from plivo_tracker.outbound.sweeper import Sweeper, SweepResult
from plivo_tracker.plivo.client import PlivoClient, Timeout
from plivo_tracker.retention.purger import Purger, PurgeResult, make_purger
from plivo_tracker.simulator.api import SimulatedPlivo, create_simulator_app
from plivo_tracker.simulator.emitter import Emitter
from plivo_tracker.simulator.inbound import IncomingTraffic
from plivo_tracker.simulator.scenario import ScenarioConfig
from plivo_tracker.web.deps import Context
from plivo_tracker.web.throttle import Throttle

T = TypeVar("T")

SIMULATOR_SRC = "14155550100"
DEMO_REPLY_RATE = 0.25  # `serve --demo`: a share of the delivered demo messages get a reply
LOOKUP_CONNECTIONS = 2  # pooled connections beyond PLIVO_CONCURRENCY: Get/List/Account calls
SPOOL_REPLAY_INTERVAL = 2.0
log = structlog.get_logger(__name__)


# --- the database ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Store:
    """The database as one process uses it: the engine (reads) and the one writer for every
    write (callback batches, outbox, dispatcher), so SQLite sees one write transaction at a
    time per process."""

    engine: AsyncEngine
    writer: Writer


@contextlib.asynccontextmanager
async def open_engine(
    settings: Settings, *, migrate: bool = False, direct: bool = False
) -> AsyncIterator[AsyncEngine]:
    """The engine on DATABASE_URL, upgraded to the head revision first when `migrate`.
    `direct`: on DATABASE_DIRECT_URL instead (never through PgBouncer: `db upgrade`)."""
    if direct:
        engine = make_engine(settings.direct_database_url)
    else:
        pgbouncer = settings.database_pooler == "pgbouncer"
        engine = make_engine(settings.database_url, pgbouncer=pgbouncer)
    try:
        if migrate:
            await upgrade(engine)
        yield engine
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def open_store(settings: Settings, *, migrate: bool = False) -> AsyncIterator[Store]:
    async with open_engine(settings, migrate=migrate) as engine:
        writer = make_writer(engine)
        try:
            yield Store(engine, writer)
        finally:
            await writer.close()


@contextlib.asynccontextmanager
async def listening(
    database_url: str, channels: dict[str, Callable[[], None]]
) -> AsyncIterator[Listener]:
    """PostgreSQL LISTEN on `channels` (nothing on SQLite), on DATABASE_DIRECT_URL: through
    PgBouncer in transaction mode a LISTEN hears nothing. Not fatal when it fails: every
    reader also polls, and the live feed reconnects it (`hub.on_idle`)."""
    listener = Listener(database_url, channels)
    await listener.start()
    try:
        yield listener
    finally:
        await listener.close()


# --- sending ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Sending:
    """The background side: the Plivo client, the dispatcher, the sweeper, the retention purge
    (`run()`), and the projector that applies the journal (a job of its own, under its own
    lease in `serve`; the one-shot commands drain it); in simulator mode also the simulator and
    its callback emitter."""

    client: PlivoClient
    dispatcher: Dispatcher
    sweeper: Sweeper
    purger: Purger
    projector: Projector
    default_src: str | None = None  # PLIVO_SRC, or the simulator's number
    simulator: SimulatedPlivo | None = None
    emitter: Emitter | None = None

    def stop(self) -> None:
        """Ask the loops to end (each finishes its pass; the purge its batch in hand)."""
        self.dispatcher.stop()
        self.sweeper.stop()
        self.purger.stop()

    async def run(self) -> None:
        """The dispatcher, sweeper and purge loops, until `stop()` (runs again after it)."""
        await asyncio.gather(self.dispatcher.run(), self.sweeper.run(), self.purger.run())

    async def close(self) -> None:
        self.stop()
        if self.emitter is not None:
            await self.emitter.close()
        await self.client.aclose()


def build_sending(
    settings: Settings,
    writer: Writer,
    reader: Reader,
    dialect: Dialect,
    *,
    callbacks: httpx.AsyncClient | None = None,
    scenario: ScenarioConfig | None = None,
    poll_interval: float | None = None,
) -> Sending:
    """`callbacks`: the HTTP client the simulator posts with (tests route it in-process).
    Nothing runs yet; `Sending.close()` releases the clients."""
    callback_url = settings.public_base_url + CALLBACK_PATH
    simulator = emitter = None
    if settings.simulator_mode:
        token = settings.simulator_auth_token
        if scenario is None:
            demo = settings.demo_interval_seconds > 0
            scenario = ScenarioConfig(reply_rate=DEMO_REPLY_RATE if demo else 0.0)
        emitter = Emitter(token, scenario, client=callbacks)
        simulator = SimulatedPlivo(
            settings.auth_id,
            token,
            emitter=emitter,
            # The Application's message_url: inbound messages come back to this server.
            message_url=settings.public_base_url + INBOUND_PATH,
            numbers=(SIMULATOR_SRC,),
        )
        client = PlivoClient.in_process(create_simulator_app(simulator), settings.auth_id, token)
    else:
        assert settings.plivo_auth_id
        assert settings.plivo_auth_token
        client = PlivoClient(
            settings.plivo_api_url,
            settings.plivo_auth_id,
            settings.plivo_auth_token,
            timeout=Timeout(
                settings.plivo_timeout_seconds, connect=min(3.0, settings.plivo_timeout_seconds)
            ),
            # The dispatcher's sends in flight, and room for the sweeper's and its own lookups.
            pool=settings.plivo_concurrency + LOOKUP_CONNECTIONS,
        )
    dispatcher = make_dispatcher(
        writer,
        client,
        dialect=dialect,
        callback_url=callback_url,
        mps=settings.plivo_mps,
        poll_interval=poll_interval or settings.poll_seconds,
        reconcile_grace=settings.reconcile_after_seconds,
        max_lookups=settings.reconcile_max_lookups,
        limits=Limits(
            mps=settings.plivo_mps,
            api_per_5s=settings.plivo_api_per_5s,
            list_per_minute=settings.plivo_list_per_minute,
        ),
        log_default=settings.plivo_log,
        erasure=settings.erasure,
        concurrency=settings.plivo_concurrency,
        opt_out_exemption=settings.opt_out_transactional_exemption,
    )
    sweeper = Sweeper(
        writer,
        client,
        dispatcher.budget,
        stuck_after=settings.stuck_after_seconds,
        no_receipt_after=settings.no_receipt_after_seconds,
        interval=settings.sweep_interval_seconds,
        erasure=settings.erasure,
    )
    projector = Projector(
        writer,
        reader,
        resend=outbound_repo.resender(settings.resend_policy),
        erasure=settings.erasure,
        on_inbound=optout_repo.keyword_hook(settings),
        on_resend=dispatcher.wake,
    )
    # Whatever appends to the journal wakes this process's projector once it commits: the
    # callbacks' committer, the API's sends, the dispatcher, the sweeper, an operator.
    writer.on_journal = projector.wake
    return Sending(
        client,
        dispatcher,
        sweeper,
        make_purger(writer, settings, loop=True),
        projector,
        default_src=settings.plivo_src or (SIMULATOR_SRC if settings.simulator_mode else None),
        simulator=simulator,
        emitter=emitter,
    )


@contextlib.asynccontextmanager
async def open_sending(
    settings: Settings, store: Store, *, poll_interval: float | None = None
) -> AsyncIterator[Sending]:
    reader = make_reader(store.engine)
    sending = build_sending(
        settings, store.writer, reader, store.engine.dialect, poll_interval=poll_interval
    )
    try:
        yield sending
    finally:
        await sending.close()
        await reader.close()


# --- background loops ---------------------------------------------------------------------------


async def _replay_spool_forever(committer: GroupCommitter, spool: Spool) -> None:
    while True:
        await asyncio.sleep(SPOOL_REPLAY_INTERVAL)
        if spool.pending():
            try:
                replayed = await committer.replay(spool)
            except Exception as exc:  # noqa: BLE001 - database still down: try again later
                log.warning("spool.replay_failed", error=repr(exc))
            else:
                log.info("spool.replayed", items=replayed)


@contextlib.asynccontextmanager
async def _ingesting(
    committer: GroupCommitter, spool: Spool, projector: Projector
) -> AsyncIterator[None]:
    """The group committer, and the loop that replays the spool every few seconds. On exit
    the committer commits what is queued, the replayer stops, and one last projector pass
    applies what the journal holds (a stop that cannot do it loses nothing: the next start
    does)."""
    committer.start()
    replayer = asyncio.create_task(_replay_spool_forever(committer, spool))
    try:
        yield
    finally:
        await committer.stop()
        replayer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await replayer
        try:
            await projector.drain()
        except Exception as exc:  # noqa: BLE001 - database gone: the journal keeps it
            log.warning("projector.final_pass_failed", error=repr(exc))


@contextlib.asynccontextmanager
async def _live_feed(hub: LiveHub) -> AsyncIterator[None]:
    task = asyncio.create_task(hub.run())
    try:
        yield
    finally:
        hub.stop()  # ends every subscription: sockets close with 1001
        await task


# --- processes --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Service:
    """What a running `serve` process holds: the routes' Context, and the sending side."""

    ctx: Context
    sending: Sending


@contextlib.asynccontextmanager
async def open_service(
    settings: Settings,
    *,
    throttle: Throttle,
    migrate: bool,
    dispatch: bool,
    callbacks: httpx.AsyncClient | None = None,
    scenario: ScenarioConfig | None = None,
) -> AsyncIterator[Service]:
    """Everything `serve` runs behind its routes, until the block ends.

    `dispatch`: run the dispatcher, sweeper and purge here while this process leads them
    (lease "dispatcher": one process at a time across `serve --workers N` and other servers;
    `worker` processes run them besides, without the lease). Shut-down order, after the server
    has finished its in-flight requests: demo, live feed (sockets close), LISTEN, dispatcher
    and sweeper (the lease released), the Plivo client and the simulator's emitter, then the
    committer commits what is queued (loopback callbacks have stopped by then), the spool
    replayer, and last the database.
    """
    async with contextlib.AsyncExitStack() as stack:
        store = await stack.enter_async_context(open_store(settings, migrate=migrate))
        reader = make_reader(store.engine)
        stack.push_async_callback(reader.close)
        spool = Spool(settings.spool_dir)
        sending = build_sending(
            settings,
            store.writer,
            reader,
            store.engine.dialect,
            callbacks=callbacks,
            scenario=scenario,
        )
        projector = sending.projector
        committer = GroupCommitter(
            store.engine,
            max_batch=settings.commit_batch_max,
            spool=spool.write,
            writer=store.writer,
        )
        await stack.enter_async_context(_ingesting(committer, spool, projector))
        stack.push_async_callback(sending.close)
        hub = database_hub(
            reader,
            queue_size=settings.live_queue_size,
            poll_interval=settings.live_poll_interval,
        )
        with contextlib.suppress(Exception):  # database not answering: hub.run() retries
            await hub.start()
        store.writer.on_commit = hub.wake
        channels = {EVENTS_CHANNEL: hub.wake, JOURNAL_CHANNEL: projector.wake}
        # Jobs that run in one process at a time (the leader of each; loops.Leadership). A new
        # one is a line here: leaders[name] = await stack.enter_async_context(leading(...)).
        leaders: dict[str, Leadership] = {}
        # The projector: every process wakes its own on its appends and on NOTIFY; only the
        # leader's runs (correct either way: a pass locks the cursor row; this spares the
        # others queueing on that lock).
        leaders["projector"] = await stack.enter_async_context(
            leading(store.writer, "projector", projector)
        )
        if dispatch:
            # The dispatcher, sweeper and purge; every process wakes its own on NOTIFY (only
            # the leader's runs), and on SQLite the leader polls.
            leaders["dispatcher"] = await stack.enter_async_context(
                leading(store.writer, "dispatcher", sending)
            )
            channels[OUTBOX_CHANNEL] = sending.dispatcher.wake
        listener = await stack.enter_async_context(
            listening(settings.direct_database_url, channels)
        )
        hub.on_idle = listener.start  # reconnects LISTEN if PostgreSQL dropped it
        await stack.enter_async_context(_live_feed(hub))
        dispatcher = sending.dispatcher if dispatch else None
        demo = demo_job(settings, store.writer, dispatcher, sending.default_src)
        if demo is not None:
            leaders["demo"] = await stack.enter_async_context(leading(store.writer, "demo", demo))
        traffic = inbound_traffic(settings, sending)
        if traffic is not None:
            leaders["simulator-inbound"] = await stack.enter_async_context(
                leading(store.writer, "simulator-inbound", traffic)
            )
        ctx = Context(
            settings=settings,
            engine=store.engine,
            writer=store.writer,
            committer=committer,
            spool=spool,
            throttle=throttle,
            dispatcher=dispatcher,
            default_src=sending.default_src,
            hub=hub,
            reader=reader,
            projector=projector,
            leaders=leaders,
        )
        yield Service(ctx, sending)


def inbound_traffic(settings: Settings, sending: Sending) -> IncomingTraffic | None:
    """Simulator mode with SIMULATOR_INBOUND_PER_MINUTE: the simulator's stream of inbound
    messages to this server (one stream across workers: it runs under a leader)."""
    sim = sending.simulator
    if sim is None or settings.simulator_inbound_per_minute <= 0:
        return None
    return IncomingTraffic(sim.receive, sim.numbers, settings.simulator_inbound_per_minute)


@contextlib.asynccontextmanager
async def open_worker(
    settings: Settings, *, poll_interval: float | None = None
) -> AsyncIterator[Sending]:
    """Everything `worker` runs: `run()` the result until `stop()`. On PostgreSQL it wakes at
    once when any process adds outbox rows (LISTEN)."""
    async with (
        open_store(settings) as store,
        open_sending(settings, store, poll_interval=poll_interval) as sending,
        listening(settings.direct_database_url, {OUTBOX_CHANNEL: sending.dispatcher.wake}),
    ):
        yield sending


async def run_worker(settings: Settings) -> None:
    """`worker`: the dispatcher, the sweeper and the purge until SIGINT or SIGTERM."""
    async with open_worker(settings) as worker:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run()


# --- one-shot commands --------------------------------------------------------------------------


def upgrade_sqlite_database(settings: Settings) -> None:
    """`serve --workers N` on SQLite: migrate to head once, synchronously, before the workers
    start (several migrating a new file at once collide)."""
    upgrade_sqlite(settings.database_url)


async def upgrade_database(settings: Settings) -> str | None:
    """`db upgrade`: migrate to head; returns the revision the database is at. Directly, not
    through PgBouncer: a migration is one long transaction of DDL, nothing a pool shares."""
    async with open_engine(settings, migrate=True, direct=True) as engine:
        return await current_revision(engine)


async def on_database(settings: Settings, work: Callable[[Connection], T]) -> T:
    """Run `work(conn)` in one write transaction (the operator commands)."""
    async with open_store(settings) as store:
        return await store.writer.run(work)


async def replay_spool(settings: Settings) -> int:
    """`spool replay`: commit every spooled file now; returns the callbacks replayed."""
    async with open_store(settings) as store, open_sending(settings, store) as sending:
        committer = GroupCommitter(store.engine, writer=store.writer)
        try:
            replayed = await committer.replay(Spool(settings.spool_dir))
        finally:
            await committer.stop()
        await sending.projector.drain()  # applied now, not when a server next runs
        return replayed


async def sweep_once(settings: Settings, *, dry_run: bool) -> SweepResult:
    """`sweep`: look up stuck messages at Plivo once (and apply, unless `dry_run`)."""
    async with open_store(settings) as store, open_sending(settings, store) as sending:
        result = await sending.sweeper.run_once(dry_run=dry_run)
        await sending.projector.drain()  # the answers applied now, as `sweep` reports them
        return result


async def purge_once(settings: Settings, *, older_than: timedelta, dry_run: bool) -> PurgeResult:
    """`purge`: one pass now, without the lease (an operator's command)."""
    async with open_store(settings) as store:
        purger = make_purger(store.writer, settings, loop=False)
        result = await purger.run_once(older_than=older_than, dry_run=dry_run)
        assert result is not None  # no lease: a pass always runs
        return result


async def copy_between(
    source_url: str,
    target_url: str,
    *,
    batch_size: int,
    resume: bool,
    force: bool,
    progress: Progress | None = None,
    stop_after_batches: int | None = None,
) -> CopyResult:
    """`db copy`: every table from `source_url` (opened read-only: nothing is written to it)
    into `target_url`, then verified (db/copy.py). CopyRefused: nothing was written."""
    if same_database(source_url, target_url):
        raise CopyRefused("--from and --to name the same database: nothing to copy")
    path = sqlite_path(source_url)
    if path is not None and not path.is_file():
        raise CopyFailed(f"--from: no database file at {path}")
    source = make_engine(source_url, pool_size=2, read_only=True)
    target = make_engine(target_url, pool_size=2)
    try:
        for option, engine in (("--from", source), ("--to", target)):
            try:
                async with engine.connect():
                    pass
            except Exception as exc:  # noqa: BLE001 - one line: which side, and why
                first = (str(getattr(exc, "orig", None) or exc).splitlines() or [repr(exc)])[0]
                raise CopyFailed(f"{option}: cannot open the database ({first})") from exc
            if engine is source:  # before the target is opened (a SQLite file made)
                await check_source(source)
        return await copy_database(
            source,
            target,
            batch_size=batch_size,
            resume=resume,
            force=force,
            progress=progress,
            stop_after_batches=stop_after_batches,
        )
    finally:
        await source.dispose()
        await target.dispose()
