"""The stuck-message sweeper on SQLite and PostgreSQL: messages whose callbacks were all lost
settle through Get Message (source `reconcile`, through the status machine), and messages Plivo
leaves at `sent` settle as "sent, no receipt". Nothing waits for ever."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from plivo_tracker.simulator.api import SimulatedPlivo
from plivo_tracker.simulator.scenario import ScenarioConfig
from tests.conftest import ServiceOpener


def _sweeping(simulator_service: ServiceOpener, scenario: ScenarioConfig) -> Any:
    """The service with a sweeper that acts within seconds instead of half an hour."""
    return simulator_service(
        scenario, stuck_after_seconds=1, no_receipt_after_seconds=2, sweep_interval_seconds=0.2
    )


@pytest.fixture
async def dropped(
    simulator_service: ServiceOpener,
) -> AsyncIterator[tuple[httpx.AsyncClient, SimulatedPlivo]]:
    scenario = ScenarioConfig(
        speed=300, fail_rate=0, undelivered_rate=0.5, dup_rate=0, callback_drop_rate=1.0
    )
    async with _sweeping(simulator_service, scenario) as (client, app):
        yield client, app.state.sending.simulator


@pytest.fixture
async def no_receipt(
    simulator_service: ServiceOpener,
) -> AsyncIterator[tuple[httpx.AsyncClient, SimulatedPlivo]]:
    scenario = ScenarioConfig(speed=300, fail_rate=0, undelivered_rate=0, sent_final_rate=1.0)
    async with _sweeping(simulator_service, scenario) as (client, app):
        yield client, app.state.sending.simulator


async def _wait(client: httpx.AsyncClient, ids: list[int], seconds: float) -> list[Any]:
    found: list[Any] = []
    try:
        async with asyncio.timeout(seconds):
            while True:
                found = [(await client.get(f"/api/messages/{i}")).json() for i in ids]
                if all(m["settled"] for m in found):
                    return found
                await asyncio.sleep(0.1)
    except TimeoutError:
        pytest.fail(f"not settled after {seconds} s: {[m['status'] for m in found]}")


async def test_messages_whose_callbacks_were_lost_settle_through_get_message(
    dropped: tuple[httpx.AsyncClient, SimulatedPlivo],
) -> None:
    client, sim = dropped
    resp = await client.post(
        "/api/messages", json={"to": [f"+1415555{i:04d}" for i in range(6)], "text": "hi"}
    )
    ids = [m["id"] for m in resp.json()["messages"]]
    # Bounded: 1 s without callbacks, then a sweep every 0.2 s.
    settled = await _wait(client, ids, seconds=15)
    assert sim.accepted == 6
    for message in settled:
        mdr = sim.messages[message["message_uuid"]]
        assert message["status"] == mdr["message_state"]  # what Plivo says, nothing else
        assert message["settled_reason"] == "final"
        sources = [e["source"] for e in message["events"]]
        assert "callback" not in sources  # every callback was lost ...
        assert "reconcile" in sources  # ... the sweeper's lookup is in the timeline
        if message["status"] == "undelivered":
            assert message["error_code"] == mdr["error_code"]
    swept = await client.get("/metrics")
    assert "plivo_tracker_swept_total" in swept.text


async def test_a_message_plivo_leaves_at_sent_settles_as_no_receipt(
    no_receipt: tuple[httpx.AsyncClient, SimulatedPlivo],
) -> None:
    client, sim = no_receipt
    resp = await client.post("/api/messages", json={"to": "+14155550101", "text": "hi"})
    [message_id] = [m["id"] for m in resp.json()["messages"]]
    [message] = await _wait(client, [message_id], seconds=15)
    assert message["status"] == "sent"
    assert message["settled"] is True
    assert message["settled_reason"] == "no_receipt"
    assert sim.accepted == 1
    listed = (await client.get("/api/messages?status=sent")).json()["messages"]
    assert [m["settled_reason"] for m in listed] == ["no_receipt"]
    stats = (await client.get("/api/stats?window=1h")).json()
    assert stats["sent_no_receipt"] == 1
    assert stats["by_status"]["sent"] == 1
