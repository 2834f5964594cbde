"""Simulator → signed callbacks → our ingestion, on SQLite and PostgreSQL, over ASGI.

Sends go through the real client to the simulator's Message API; the emitter posts genuinely
signed callbacks (with duplicates, reordering and failures, in every signature mode, and per
part for old-style multipart messages) to the real callback endpoint.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from plivo_tracker.inbound.routes import CallbackEndpoint
from plivo_tracker.plivo.client import PlivoClient
from plivo_tracker.simulator.api import SimulatedPlivo, create_simulator_app
from plivo_tracker.simulator.emitter import Emitter
from plivo_tracker.simulator.scenario import ScenarioConfig
from tests.conftest import (
    AUTH_ID,
    BASE_URL,
    MAIN_TOKEN,
    TOKEN,
    get_message,
    projecting_client,
    until_projected,
)

CALLBACK_URL = BASE_URL + "/plivo/callback"


class FailFirst:
    """An ASGI receiver that answers 503 to the first `n` callbacks, then lets them through."""

    def __init__(self, app: CallbackEndpoint, n: int) -> None:
        self.app, self.left = app, n

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.left > 0:
            self.left -= 1
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)


async def _send_all(
    sim: SimulatedPlivo, n: int, method: str = "POST", text: str = "code 123456"
) -> list[str]:
    client = PlivoClient.in_process(create_simulator_app(sim), AUTH_ID, TOKEN)
    try:
        uuids = []
        for i in range(n):
            accepted = await client.send(
                src="14155550100",
                dst=f"1415555{i:04d}",
                text=text,
                url=CALLBACK_URL,
                method=method,
            )
            uuids.extend(accepted.message_uuids)
        return uuids
    finally:
        await client.aclose()


@pytest.fixture
async def receiver(app: CallbackEndpoint) -> AsyncIterator[httpx.AsyncClient]:
    async with projecting_client(app) as client:
        yield client


async def _check_matches_simulator(
    app: CallbackEndpoint, sim: SimulatedPlivo, uuids: list[str]
) -> None:
    await until_projected(app)
    engine = app.state.ctx.engine
    for uuid in uuids:
        mdr: dict[str, Any] = sim.messages[uuid]
        msg = await get_message(engine, uuid)
        assert msg is not None, uuid
        assert msg.status == mdr["message_state"]
        if mdr["message_state"] in ("failed", "undelivered"):
            assert msg.error_code == mdr["error_code"]
            assert msg.error_meaning
        assert len({(e.status, e.sequence) for e in msg.events}) == len(msg.events)  # no duplicates


async def test_simulated_traffic_ends_in_the_simulators_final_states(
    app: CallbackEndpoint, receiver: httpx.AsyncClient
) -> None:
    cfg = ScenarioConfig(
        speed=500, fail_rate=0.2, undelivered_rate=0.2, dup_rate=0.3, reorder_rate=0.3
    )
    emitter = Emitter(TOKEN, cfg, seed=3, client=receiver)
    sim = SimulatedPlivo(AUTH_ID, TOKEN, emitter=emitter)
    try:
        uuids = await _send_all(sim, 40)
        await emitter.idle()
    finally:
        await emitter.close()
    assert {s for _, s, _ in emitter.delivered} >= {"queued", "sent", "delivered"}
    assert all(code == 200 for _, _, code in emitter.delivered)
    await _check_matches_simulator(app, sim, uuids)


async def test_get_callbacks_verify_too(app: CallbackEndpoint, receiver: httpx.AsyncClient) -> None:
    emitter = Emitter(TOKEN, ScenarioConfig(speed=500), seed=4, client=receiver)
    sim = SimulatedPlivo(AUTH_ID, TOKEN, emitter=emitter)
    try:
        uuids = await _send_all(sim, 5, method="GET")
        await emitter.idle()
    finally:
        await emitter.close()
    assert all(code == 200 for _, _, code in emitter.delivered)
    await _check_matches_simulator(app, sim, uuids)


async def test_receiver_errors_get_plivos_retries(app: CallbackEndpoint) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=FailFirst(app, 2))) as client:
        cfg = ScenarioConfig(
            speed=2000, fail_rate=0, undelivered_rate=0, dup_rate=0, reorder_rate=0
        )
        emitter = Emitter(TOKEN, cfg, seed=5, client=client)
        sim = SimulatedPlivo(AUTH_ID, TOKEN, emitter=emitter)
        try:
            uuids = await _send_all(sim, 1)
            await emitter.idle()
        finally:
            await emitter.close()
    codes = [code for _, _, code in emitter.delivered]
    assert codes.count(503) == 2
    assert codes.count(200) == 3  # queued, sent, delivered all arrive in the end
    await _check_matches_simulator(app, sim, uuids)


@pytest.mark.parametrize("mode", ["both", "v2", "v3", "ma"])
async def test_every_signature_mode_is_accepted_by_our_verifier(
    app: CallbackEndpoint, receiver: httpx.AsyncClient, mode: str
) -> None:
    cfg = ScenarioConfig(speed=1000, dup_rate=0, reorder_rate=0)
    emitter = Emitter(
        TOKEN, cfg, seed=6, client=receiver, signature_mode=mode, main_token=MAIN_TOKEN
    )
    sim = SimulatedPlivo(AUTH_ID, TOKEN, emitter=emitter)
    try:
        uuids = await _send_all(sim, 2)
        await emitter.idle()
    finally:
        await emitter.close()
    assert emitter.delivered
    assert all(code == 200 for _, _, code in emitter.delivered)
    await _check_matches_simulator(app, sim, uuids)


async def test_per_part_callbacks_become_parts_of_one_message(
    app: CallbackEndpoint, receiver: httpx.AsyncClient
) -> None:
    cfg = ScenarioConfig(
        speed=1000,
        fail_rate=0,
        undelivered_rate=0,
        dup_rate=0,
        reorder_rate=0,
        per_part_callbacks=True,
    )
    emitter = Emitter(TOKEN, cfg, seed=7, client=receiver)
    sim = SimulatedPlivo(AUTH_ID, TOKEN, emitter=emitter)
    try:
        [uuid] = await _send_all(sim, 1, text="x" * 200)  # two GSM-7 parts
        await emitter.idle()
    finally:
        await emitter.close()
    assert all(code == 200 for _, _, code in emitter.delivered)
    await until_projected(app)
    msg = await get_message(app.state.ctx.engine, uuid)
    assert msg is not None
    assert sorted((p.part_info, p.status) for p in msg.parts) == [
        ("1 of 2", "delivered"),
        ("2 of 2", "delivered"),
    ]
    assert {p.part_uuid for p in msg.parts} == set(sim.messages)
    assert msg.status == "delivered"


async def test_the_product_app_does_not_serve_the_control_api(client: httpx.AsyncClient) -> None:
    for path in ("/_simulator/faults", "/_simulator/stats"):
        assert (await client.get(path)).status_code == 404
