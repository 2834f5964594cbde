"""create_app(settings) and its lifespan: engine, migrations (SQLite), group committer, spool,
and the background loops (dispatcher, sweeper, purge)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator

import httpx
import structlog
from fastapi import FastAPI

from plivo_tracker import __version__
from plivo_tracker.config import ConfigError, Settings, api_keys_problem
from plivo_tracker.db.dialect import EVENTS_CHANNEL
from plivo_tracker.db.engine import Writer, make_engine, make_reader, make_writer
from plivo_tracker.db.migrate import upgrade
from plivo_tracker.inbound.committer import GroupCommitter
from plivo_tracker.inbound.routes import CallbackEndpoint
from plivo_tracker.inbound.routes import router as inbound_router
from plivo_tracker.inbound.spool import Spool
from plivo_tracker.live.hub import database_hub
from plivo_tracker.live.notify import Listener
from plivo_tracker.live.routes import router as live_router
from plivo_tracker.messages.routes import router as messages_router
from plivo_tracker.outbound.dispatcher import Dispatcher
from plivo_tracker.outbound.routes import router as outbound_router
from plivo_tracker.retention.purger import make_purger
from plivo_tracker.sending import build_sending
from plivo_tracker.simulator.demo import run_demo
from plivo_tracker.simulator.scenario import ScenarioConfig
from plivo_tracker.web import dashboard, errors
from plivo_tracker.web.deps import Context
from plivo_tracker.web.hygiene import SafeJSONResponse
from plivo_tracker.web.ops import router as ops_router
from plivo_tracker.web.request_id import RequestId
from plivo_tracker.web.throttle import Throttle

log = structlog.get_logger(__name__)

SPOOL_REPLAY_INTERVAL = 2.0


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


def _tune_gc() -> None:
    """Keep garbage-collection pauses out of the callback tail latency.

    Everything allocated at start-up (modules, app, metadata) moves to the permanent
    generation, so full collections stop re-scanning it. Measured in docs/benchmarks.md
    (callback p99 roughly halved).
    """
    gc.collect()
    gc.freeze()


def _start_demo(
    settings: Settings,
    writer: Writer,
    dispatcher: Dispatcher,
    src: str | None,
    dispatch: bool,
) -> asyncio.Task[None] | None:
    if settings.demo_interval_seconds <= 0:
        return None
    if not settings.simulator_mode or src is None or not dispatch:
        log.warning("demo.off", reason="demo traffic runs only in simulator mode, with dispatch")
        return None
    log.info("demo.on", interval_seconds=settings.demo_interval_seconds)
    return asyncio.create_task(run_demo(writer, dispatcher, src, settings.demo_interval_seconds))


def create_app(
    settings: Settings,
    *,
    migrate: bool | None = None,
    dispatch: bool = True,
    loopback_callbacks: bool = False,
    scenario: ScenarioConfig | None = None,
) -> RequestId:
    """Build the ASGI app. `migrate` defaults to True on SQLite (PostgreSQL: `db upgrade`).

    `dispatch` runs the outbox dispatcher in this process (`serve` on one machine; `worker`
    does it elsewhere). `loopback_callbacks` makes the in-process simulator deliver its
    callbacks to this app directly instead of over HTTP (tests without a port).
    The FastAPI app is wrapped by the plain-ASGI callback endpoint (the hot path), and that by
    the request id (web/request_id.py).
    """
    # Checked whatever starts the app (serve, tests, another ASGI server).
    problem = settings.callback_url_error() or api_keys_problem(settings)
    if problem:
        raise ConfigError(problem)
    throttle = Throttle(settings)
    auto_migrate = settings.is_sqlite if migrate is None else migrate
    callbacks: httpx.AsyncClient | None = None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        if auto_migrate:
            await upgrade(engine)
        spool = Spool(settings.spool_dir)
        writer = make_writer(engine)
        nonlocal callbacks
        if loopback_callbacks:
            callbacks = httpx.AsyncClient(transport=httpx.ASGITransport(app=outer))
        sending = build_sending(
            settings, writer, engine.dialect, callbacks=callbacks, scenario=scenario
        )
        committer = GroupCommitter(
            engine,
            max_batch=settings.commit_batch_max,
            spool=spool.write,
            writer=writer,
            resend=settings.resend_policy,
            on_resend=sending.dispatcher.wake if dispatch else None,
            erasure=settings.erasure,
        )
        committer.start()
        reader = make_reader(engine)
        hub = database_hub(
            reader,
            queue_size=settings.live_queue_size,
            poll_interval=settings.live_poll_seconds,
        )
        with contextlib.suppress(Exception):  # database not answering: hub.run() retries
            await hub.start()
        writer.on_commit = hub.wake
        app.state.ctx = Context(
            settings=settings,
            engine=engine,
            writer=writer,
            committer=committer,
            spool=spool,
            throttle=throttle,
            dispatcher=sending.dispatcher if dispatch else None,
            default_src=sending.default_src,
            hub=hub,
            reader=reader,
        )
        app.state.sending = sending
        if dispatch:
            listener = await sending.listen(settings.database_url, {EVENTS_CHANNEL: hub.wake})
        else:
            listener = Listener(settings.database_url, {EVENTS_CHANNEL: hub.wake})
            await listener.start()
        hub.on_idle = listener.start  # reconnects LISTEN if PostgreSQL dropped it
        live_feed = asyncio.create_task(hub.run())
        dispatcher = asyncio.create_task(sending.dispatcher.run()) if dispatch else None
        sweeper = (
            asyncio.create_task(sending.sweeper.run())
            if dispatch and sending.sweeper is not None
            else None
        )
        # The loops run where dispatching does (`serve`; `worker` runs them elsewhere).
        purger = make_purger(writer, settings, loop=True) if dispatch else None
        purging = asyncio.create_task(purger.run()) if purger is not None else None
        demo = _start_demo(settings, writer, sending.dispatcher, sending.default_src, dispatch)
        replayer = asyncio.create_task(_replay_spool_forever(committer, spool))
        _tune_gc()
        log.info(
            "app.started",
            version=__version__,
            database=settings.database_url.split("://")[0],
            simulator_mode=settings.simulator_mode,
            # What Plivo is told to call: check it against the Application and the tunnel.
            callback_url=settings.public_base_url + "/plivo/callback",
        )
        try:
            yield
        finally:
            # In-flight requests are done (the server waits for them); commit what is queued.
            if demo is not None:
                demo.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await demo
            hub.stop()
            await live_feed
            await listener.close()
            sending.dispatcher.stop()
            if sending.sweeper is not None:
                sending.sweeper.stop()
            if purger is not None:
                purger.stop()  # mid-pass: after the batch in hand
            if dispatcher is not None:
                await dispatcher
            if sweeper is not None:
                await sweeper
            if purging is not None:
                await purging
            await sending.close()
            if callbacks is not None:
                await callbacks.aclose()
            await committer.stop()
            replayer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await replayer
            await writer.close()
            await reader.close()
            await engine.dispose()
            log.info("app.stopped")

    app = FastAPI(
        title="plivo-tracker",
        version=__version__,
        summary="Send SMS/MMS through Plivo and track every message's delivery status.",
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
        redoc_url=None,  # one documentation page (/docs) is enough surface
    )
    errors.register(app)
    app.include_router(inbound_router)
    app.include_router(messages_router)
    app.include_router(ops_router)
    app.include_router(outbound_router)
    app.include_router(live_router)
    app.include_router(dashboard.router)
    app.mount("/static", dashboard.static_files(), name="static")
    # Outermost: every log line of the request has its id.
    outer = RequestId(CallbackEndpoint(app, settings, throttle))
    return outer
