"""create_app(settings): the HTTP app (routers, error handlers, the plain-ASGI layers) and a
lifespan that opens the process's parts through the composition root (composition.py)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
from collections.abc import AsyncIterator

import httpx
import structlog
from fastapi import FastAPI

from plivo_tracker import __version__
from plivo_tracker.composition import open_service
from plivo_tracker.config import ConfigError, Settings, api_keys_problem, load_settings
from plivo_tracker.conversations.routes import router as conversations_router
from plivo_tracker.inbound.routes import CallbackEndpoint
from plivo_tracker.inbound.routes import router as inbound_router
from plivo_tracker.live.routes import router as live_router
from plivo_tracker.messages.routes import router as messages_router
from plivo_tracker.optouts.routes import router as optouts_router
from plivo_tracker.outbound.routes import router as outbound_router
from plivo_tracker.simulator.scenario import ScenarioConfig
from plivo_tracker.web import dashboard, errors
from plivo_tracker.web.hygiene import SafeJSONResponse
from plivo_tracker.web.ops import router as ops_router
from plivo_tracker.web.request_id import RequestId
from plivo_tracker.web.throttle import Throttle

log = structlog.get_logger(__name__)


def _tune_gc() -> None:
    """Keep garbage-collection pauses out of the callback tail latency.

    Everything allocated at start-up (modules, app, metadata) moves to the permanent
    generation, so full collections stop re-scanning it. Measured in docs/benchmarks.md
    (callback p99 roughly halved).
    """
    gc.collect()
    gc.freeze()


def startup_problem(settings: Settings) -> str | None:
    """Why the app may not run with `settings` (one line), or None: checked whatever starts
    it (serve, its workers, tests, another ASGI server), and by `serve` before any worker."""
    return settings.callback_url_error() or api_keys_problem(settings)


async def _watch_supervisor(pid: int, every: float = 1.0) -> None:
    """End this worker (SIGTERM: a graceful shut-down, the leases released) once its parent
    `serve` process is gone, e.g. killed with SIGKILL: the parent restarts dead workers, but
    nothing would stop orphaned ones, which would hold the port."""
    while True:
        await asyncio.sleep(every)
        if os.getppid() != pid:
            break
    log.error("app.orphaned", supervisor=pid, detail="the serve process is gone: stopping")
    signal.raise_signal(signal.SIGTERM)


def create_app(
    settings: Settings,
    *,
    migrate: bool | None = None,
    dispatch: bool = True,
    loopback_callbacks: bool = False,
    scenario: ScenarioConfig | None = None,
    supervisor: int | None = None,
) -> RequestId:
    """Build the ASGI app. `migrate` defaults to True on SQLite (PostgreSQL: `db upgrade`;
    `serve --workers N` migrates SQLite itself before its workers start).

    `dispatch` runs the outbox dispatcher in this process while it leads the "dispatcher"
    lease (one process at a time: `serve --workers N`, or several servers; `worker` runs it
    elsewhere besides). `loopback_callbacks` makes the in-process simulator deliver its
    callbacks to this app directly instead of over HTTP (tests without a port). `supervisor`:
    the pid of the `serve` process that started this worker; should it die, the worker shuts
    down by itself instead of serving on as an orphan.
    The FastAPI app is wrapped by the plain-ASGI callback endpoint (the hot path), and that by
    the request id (web/request_id.py).
    """
    problem = startup_problem(settings)
    if problem:
        raise ConfigError(problem)
    throttle = Throttle(settings)
    auto_migrate = settings.is_sqlite if migrate is None else migrate

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            callbacks: httpx.AsyncClient | None = None
            if loopback_callbacks:
                callbacks = httpx.AsyncClient(transport=httpx.ASGITransport(app=outer))
                stack.push_async_callback(callbacks.aclose)
            service = await stack.enter_async_context(
                open_service(
                    settings,
                    throttle=throttle,
                    migrate=auto_migrate,
                    dispatch=dispatch,
                    callbacks=callbacks,
                    scenario=scenario,
                )
            )
            app.state.ctx = service.ctx
            app.state.sending = service.sending
            if supervisor is not None:
                watch = asyncio.create_task(_watch_supervisor(supervisor))
                stack.callback(watch.cancel)
            _tune_gc()
            log.info(
                "app.started",
                version=__version__,
                database=settings.database_url.split("://")[0],
                simulator_mode=settings.simulator_mode,
                # What Plivo is told to call: check it against the Application and the tunnel.
                callback_url=settings.public_base_url + "/plivo/callback",
            )
            # In-flight requests are done when the block ends (the server waits for them);
            # the composition root then stops everything and commits what is queued.
            yield
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
    app.include_router(conversations_router)
    app.include_router(ops_router)
    app.include_router(outbound_router)
    app.include_router(optouts_router)
    app.include_router(live_router)
    app.include_router(dashboard.router)
    app.mount("/static", dashboard.static_files(), name="static")
    # Outermost: every log line of the request has its id.
    outer = RequestId(CallbackEndpoint(app, settings, throttle))
    return outer


SUPERVISOR_ENV = "PLIVO_TRACKER_SUPERVISOR"  # set by `serve --workers N` for its workers


def app_from_env() -> RequestId:
    """The app of one `serve --workers N` worker (uvicorn's factory,
    `plivo_tracker.app:app_from_env`): Settings read from the environment, which the parent
    `serve` validated and completed first (HOST, PORT, the simulator mode's token: the same
    in every worker, so that any of them verifies a callback another one's simulator signed).
    Also usable with `uvicorn --factory` directly."""
    from plivo_tracker.logging import configure_logging

    settings = load_settings(serving=True)
    configure_logging(settings.log_format, settings.log_level)
    supervisor = os.environ.get(SUPERVISOR_ENV, "")
    parent = int(supervisor) if supervisor.isdigit() else None
    if parent is None:
        return create_app(settings)  # `uvicorn --factory`: migrates SQLite as a single serve
    if parent != os.getppid():
        # Started by `serve`, which is gone already: serve nothing as an orphan.
        raise RuntimeError(f"the serve process {parent} that started this worker is gone")
    # `serve` migrated SQLite before starting the workers: several migrating a new file at
    # once would collide.
    return create_app(settings, migrate=False, supervisor=parent)
