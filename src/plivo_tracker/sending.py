"""Wires the sending side: the Plivo client (real, or the in-process simulator) and the dispatcher.

Simulator mode (no PLIVO_AUTH_ID/TOKEN): the client talks to the simulator's Message API in
process, and the simulator posts genuinely signed callbacks to PUBLIC_BASE_URL over real HTTP,
signed with this process's random simulator token, which the verifier accepts. Signature checks
are never switched off.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from sqlalchemy.engine import Dialect

from plivo_tracker.config import Settings
from plivo_tracker.db.engine import Writer
from plivo_tracker.inbound.routes import CALLBACK_PATH
from plivo_tracker.outbound.dispatcher import Dispatcher, make_dispatcher
from plivo_tracker.plivo.client import PlivoClient
from plivo_tracker.simulator.api import SimulatedPlivo, create_simulator_app
from plivo_tracker.simulator.emitter import Emitter
from plivo_tracker.simulator.scenario import ScenarioConfig

SIMULATOR_SRC = "14155550100"


@dataclass
class Sending:
    client: PlivoClient
    dispatcher: Dispatcher
    simulator: SimulatedPlivo | None = None
    emitter: Emitter | None = None
    default_src: str | None = None

    async def close(self) -> None:
        self.dispatcher.stop()
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
) -> Sending:
    """`callbacks`: the HTTP client the simulator posts with (tests route it in-process)."""
    callback_url = settings.public_base_url + CALLBACK_PATH
    simulator = emitter = None
    if settings.simulator_mode:
        token = settings.simulator_auth_token
        emitter = Emitter(token, scenario or ScenarioConfig(), client=callbacks)
        simulator = SimulatedPlivo(settings.auth_id, token, emitter=emitter)
        transport = httpx.ASGITransport(app=create_simulator_app(simulator))
        client = PlivoClient("http://simulator", settings.auth_id, token, transport=transport)
    else:
        assert settings.plivo_auth_id
        assert settings.plivo_auth_token
        client = PlivoClient(
            settings.plivo_api_url, settings.plivo_auth_id, settings.plivo_auth_token
        )
    dispatcher = make_dispatcher(
        writer, client, dialect=dialect, callback_url=callback_url, mps=settings.plivo_mps
    )
    default_src = settings.plivo_src or (SIMULATOR_SRC if settings.simulator_mode else None)
    return Sending(client, dispatcher, simulator, emitter, default_src)
