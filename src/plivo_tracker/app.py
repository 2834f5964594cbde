"""create_app(settings) and its lifespan: engine, migrations (SQLite), group committer, spool."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator

import structlog
from fastapi import FastAPI

from plivo_tracker import __version__
from plivo_tracker.config import Settings
from plivo_tracker.db.engine import make_engine
from plivo_tracker.db.migrate import upgrade
from plivo_tracker.inbound.committer import GroupCommitter
from plivo_tracker.inbound.routes import CallbackEndpoint
from plivo_tracker.inbound.routes import router as inbound_router
from plivo_tracker.inbound.spool import Spool
from plivo_tracker.messages.routes import router as messages_router
from plivo_tracker.web import errors
from plivo_tracker.web.deps import Context
from plivo_tracker.web.limits import BodySizeLimit
from plivo_tracker.web.ops import router as ops_router

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


def create_app(settings: Settings, *, migrate: bool | None = None) -> CallbackEndpoint:
    """Build the ASGI app. `migrate` defaults to True on SQLite (PostgreSQL: `db upgrade`).

    The FastAPI app is wrapped by the plain-ASGI callback endpoint (the hot path).
    """
    auto_migrate = settings.is_sqlite if migrate is None else migrate

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        if auto_migrate:
            await upgrade(engine)
        spool = Spool(settings.spool_dir)
        committer = GroupCommitter(engine, max_batch=settings.commit_batch_max, spool=spool.write)
        committer.start()
        app.state.ctx = Context(settings=settings, engine=engine, committer=committer, spool=spool)
        replayer = asyncio.create_task(_replay_spool_forever(committer, spool))
        _tune_gc()
        log.info(
            "app.started",
            version=__version__,
            database=settings.database_url.split("://")[0],
            simulator_mode=settings.simulator_mode,
        )
        try:
            yield
        finally:
            # In-flight requests are done (the server waits for them); commit what is queued.
            await committer.stop()
            replayer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await replayer
            await engine.dispose()
            log.info("app.stopped")

    app = FastAPI(
        title="plivo-tracker",
        version=__version__,
        summary="Send SMS/MMS through Plivo and track every message's delivery status.",
        lifespan=lifespan,
    )
    errors.register(app)
    app.add_middleware(BodySizeLimit)
    app.include_router(inbound_router)
    app.include_router(messages_router)
    app.include_router(ops_router)
    return CallbackEndpoint(app)
