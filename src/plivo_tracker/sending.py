"""Wires the sending side: the Plivo client (real, or the in-process simulator), the dispatcher
and the sweeper.

Simulator mode (no PLIVO_AUTH_ID/TOKEN): the client talks to the simulator's Message API in
process, and the simulator posts genuinely signed callbacks to PUBLIC_BASE_URL over real HTTP,
signed with this process's random simulator token, which the verifier accepts. Signature checks
are never switched off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx
import structlog
from sqlalchemy.engine import Dialect

from plivo_tracker.config import Settings
from plivo_tracker.db.dialect import OUTBOX_CHANNEL
from plivo_tracker.db.engine import Writer
from plivo_tracker.inbound.routes import CALLBACK_PATH
from plivo_tracker.live.notify import Listener
from plivo_tracker.outbound.budget import Limits
from plivo_tracker.outbound.dispatcher import Dispatcher, make_dispatcher
from plivo_tracker.outbound.sweeper import Sweeper
from plivo_tracker.plivo.client import PlivoClient, Timeout
from plivo_tracker.simulator.api import SimulatedPlivo, create_simulator_app
from plivo_tracker.simulator.emitter import Emitter
from plivo_tracker.simulator.scenario import ScenarioConfig

SIMULATOR_SRC = "14155550100"
LOOKUP_CONNECTIONS = 2  # pooled connections beyond PLIVO_CONCURRENCY: Get/List/Account calls
log = structlog.get_logger(__name__)


@dataclass
class Sending:
    client: PlivoClient
    dispatcher: Dispatcher
    simulator: SimulatedPlivo | None = None
    emitter: Emitter | None = None
    default_src: str | None = None
    sweeper: Sweeper | None = None

    listener: Listener | None = None  # PostgreSQL LISTEN: wakes the dispatcher (and others)

    async def listen(
        self, database_url: str, also: dict[str, Callable[[], None]] | None = None
    ) -> Listener:
        """On PostgreSQL, wake this dispatcher when another process adds outbox rows (and call
        the `also` functions on their channels). Not fatal when it fails: everything polls."""
        self.listener = Listener(
            database_url, {OUTBOX_CHANNEL: self.dispatcher.wake, **(also or {})}
        )
        await self.listener.start()
        return self.listener

    async def close(self) -> None:
        if self.listener is not None:
            await self.listener.close()
        self.dispatcher.stop()
        if self.sweeper is not None:
            self.sweeper.stop()
        if self.emitter is not None:
            await self.emitter.close()
        await self.client.aclose()


def build_sending(
    settings: Settings,
    writer: Writer,
    dialect: Dialect,
    *,
    callbacks: httpx.AsyncClient | None = None,
    scenario: ScenarioConfig | None = None,
    poll_interval: float = 1.0,
) -> Sending:
    """`callbacks`: the HTTP client the simulator posts with (tests route it in-process)."""
    callback_url = settings.public_base_url + CALLBACK_PATH
    simulator = emitter = None
    if settings.simulator_mode:
        token = settings.simulator_auth_token
        emitter = Emitter(token, scenario or ScenarioConfig(), client=callbacks)
        simulator = SimulatedPlivo(settings.auth_id, token, emitter=emitter)
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
        poll_interval=poll_interval,
        reconcile_grace=settings.reconcile_after_seconds,
        max_lookups=settings.reconcile_max_lookups,
        limits=Limits(
            mps=settings.plivo_mps,
            api_per_5s=settings.plivo_api_per_5s,
            list_per_minute=settings.plivo_list_per_minute,
        ),
        log_default=settings.plivo_log,
        concurrency=settings.plivo_concurrency,
    )
    default_src = settings.plivo_src or (SIMULATOR_SRC if settings.simulator_mode else None)
    sweeper = Sweeper(
        writer,
        client,
        dispatcher.budget,
        stuck_after=settings.stuck_after_seconds,
        no_receipt_after=settings.no_receipt_after_seconds,
        interval=settings.sweep_interval_seconds,
    )
    return Sending(client, dispatcher, simulator, emitter, default_src, sweeper)
