"""The simulator's inbound messages → /plivo/inbound, on SQLite and PostgreSQL: on demand over
real HTTP (POST /_simulator/inbound, signed V2 + V3 + Ma-, POST and GET), the in-process
simulator of `serve` (on demand, replies to delivered messages, a stream at a rate)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn

from plivo_tracker.app import create_app
from plivo_tracker.config import Settings
from plivo_tracker.simulator.api import SimulatedPlivo, create_simulator_app
from plivo_tracker.simulator.emitter import Emitter
from plivo_tracker.simulator.scenario import ScenarioConfig
from tests.conftest import (
    AUTH,
    AUTH_ID,
    MAIN_TOKEN,
    TOKEN,
    ServeASGI,
    ServiceOpener,
    free_port,
)

QUIET = {"fail_rate": 0.0, "undelivered_rate": 0.0, "dup_rate": 0.0, "reorder_rate": 0.0}


@asynccontextmanager
async def _product(settings: Settings, port: int) -> AsyncIterator[httpx.AsyncClient]:
    """The product served on `port` (its PUBLIC_BASE_URL), and a client of its API."""
    app = create_app(settings, migrate=False, dispatch=False)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("server did not start")
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=10) as client:
            yield client
    finally:
        server.should_exit = True
        await task


async def _inbound(client: httpx.AsyncClient, n: int, within: float = 15.0) -> list[Any]:
    """Until the API lists at least `n` inbound messages (a 200 means journaled; the message
    follows a few milliseconds later): oldest first."""
    async with asyncio.timeout(within):
        while True:
            got = (await client.get("/api/messages?direction=inbound&limit=200")).json()
            if len(got["messages"]) >= n:
                return list(reversed(got["messages"]))
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_on_demand_over_http(
    make_settings: Callable[..., Settings], db_url: str, serve_asgi: ServeASGI, method: str
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = make_settings(
        database_url=db_url, public_base_url=base, allow_private_callback_url=True
    )
    emitter = Emitter(TOKEN, ScenarioConfig(), signature_mode="ma", main_token=MAIN_TOKEN)
    sim = SimulatedPlivo(
        AUTH_ID, TOKEN, emitter=emitter, message_url=base + "/plivo/inbound", message_method=method
    )
    sim_base = await serve_asgi(create_simulator_app(sim))
    sent = [
        {"from": "+44 7700 900123", "text": "STOP"},
        {"from": "447700900123", "to": "14155550100", "text": "Grüße 👋 ¿qué tal?"},
        {"from": "447700900124", "text": "see", "media": ["https://media.example.com/a.jpg"]},
    ]
    try:
        async with _product(settings, port) as api, httpx.AsyncClient(base_url=sim_base) as simc:
            answers = []
            for body in sent:
                resp = await simc.post("/_simulator/inbound", json=body)
                assert resp.status_code == 200, resp.text
                answers.append(resp.json())
            assert [a["http_status"] for a in answers] == [200, 200, 200]
            bad = await simc.post("/_simulator/inbound", json={"from": "nobody", "text": "x"})
            assert bad.status_code == 422
            assert (
                await simc.post("/_simulator/inbound", json={"from": "447700900123"})
            ).status_code == 422
            got = await _inbound(api, 3)
            stats = (await simc.get("/_simulator/stats")).json()
    finally:
        await emitter.close()
    assert [m["message_uuid"] for m in got] == [a["message_uuid"] for a in answers]
    assert [m["text"] for m in got] == ["STOP", "Grüße 👋 ¿qué tal?", "see"]
    assert [m["from"] for m in got] == ["+447700900123", "+447700900123", "+447700900124"]
    assert {m["to"] for m in got} == {"+14155550100"}
    assert got[0]["inbound"]["message_intent"] == "optout"  # Plivo's keyword detection
    assert got[2]["type"] == "mms"
    assert got[2]["media_urls"] == ["https://media.example.com/a.jpg"]
    assert got[2]["inbound"]["media"] == [
        {"url": "https://media.example.com/a.jpg", "content_type": "image/jpeg"}
    ]
    assert stats["inbound"] == 3
    # Plivo's MDR of an inbound message is `delivered` once our message_url answered 2xx.
    assert {sim.messages[a["message_uuid"]]["message_state"] for a in answers} == {"delivered"}


async def test_in_process_simulator_delivers_to_serve(simulator_service: ServiceOpener) -> None:
    async with simulator_service(ScenarioConfig(speed=100, **QUIET)) as (client, app):
        sim = app.state.sending.simulator
        for text in ("HELP", " start ", "好的，谢谢"):
            _, status = await sim.receive("14155550150", "14155550100", text, ())
            assert status == 200
        got = await _inbound(client, 3)
    assert [m["text"] for m in got] == ["HELP", " start ", "好的，谢谢"]
    assert {m["from"] for m in got} == {"+14155550150"}


async def test_recipients_reply_to_delivered_messages(simulator_service: ServiceOpener) -> None:
    scenario = ScenarioConfig(speed=200, reply_rate=1.0, reply_after=(0.1, 0.2), **QUIET)
    async with simulator_service(scenario) as (client, _):
        resp = await client.post(
            "/api/messages", json={"to": ["+14155550101", "+14155550102"], "text": "Hi"}
        )
        assert resp.status_code == 202, resp.text
        got = await _inbound(client, 2, within=30)
    assert {m["from"] for m in got} == {"+14155550101", "+14155550102"}
    assert {m["to"] for m in got} == {"+14155550100"}  # to the number the message came from


async def test_a_stream_of_inbound_messages_at_a_rate(simulator_service: ServiceOpener) -> None:
    async with simulator_service(
        ScenarioConfig(speed=100, **QUIET), simulator_inbound_per_minute=1200
    ) as (client, app):
        got = await _inbound(client, 5, within=30)
        assert app.state.ctx.leaders["simulator-inbound"].leading
    assert {m["to"] for m in got} == {"+14155550100"}
    assert all(m["direction"] == "inbound" and m["status"] == "received" for m in got)
