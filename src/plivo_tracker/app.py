"""create_app(settings): the HTTP app (routers, error handlers, the plain-ASGI layers) and a
lifespan that opens the process's parts through the composition root (composition.py)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator

import httpx
import structlog
from fastapi import FastAPI

from plivo_tracker import __version__
from plivo_tracker.composition import open_service
from plivo_tracker.config import ConfigError, Settings, api_keys_problem
from plivo_tracker.inbound.routes import CallbackEndpoint
from plivo_tracker.inbound.routes import router as inbound_router
from plivo_tracker.live.routes import router as live_router
from plivo_tracker.messages.routes import router as messages_router
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
    app.include_router(ops_router)
    app.include_router(outbound_router)
    app.include_router(live_router)
    app.include_router(dashboard.router)
    app.mount("/static", dashboard.static_files(), name="static")
    # Outermost: every log line of the request has its id.
    outer = RequestId(CallbackEndpoint(app, settings, throttle))
    return outer
