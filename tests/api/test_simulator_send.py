"""The simulator's Send Message route (plain ASGI in front of its FastAPI app): the answers
plivo-protocol.md §1.2/§1.3 describe, for every kind of request, over ASGI and over real HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from plivo_tracker.simulator.api import SimulatedPlivo, create_simulator_app
from tests.conftest import AUTH_ID, TOKEN

MESSAGES = f"/v1/Account/{AUTH_ID}/Message/"


@pytest.fixture
def sim() -> SimulatedPlivo:
    return SimulatedPlivo(AUTH_ID, TOKEN)


@pytest.fixture
async def api(sim: SimulatedPlivo) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_simulator_app(sim))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://simulator", auth=(AUTH_ID, TOKEN)
    ) as client:
        yield client


def _error_body(resp: httpx.Response) -> str:
    body = resp.json()
    assert resp.headers["content-type"] == "application/json"
    assert set(body) == {"api_id", "error"}
    assert body["api_id"]
    return str(body["error"])


async def test_accepted_answer_is_plivos_json(api: httpx.AsyncClient, sim: SimulatedPlivo) -> None:
    resp = await api.post(MESSAGES, json={"src": "14155550100", "dst": "14155550101", "text": "x"})
    assert resp.status_code == 202
    assert resp.headers["content-type"] == "application/json"
    assert int(resp.headers["content-length"]) == len(resp.content)
    body = resp.json()
    assert set(body) == {"api_id", "message", "message_uuid"}
    assert body["message"] == "message(s) queued"
    [uuid] = body["message_uuid"]
    assert body["api_id"] != uuid
    assert sim.messages[uuid]["to_number"] == "14155550101"
    assert sim.send_requests == sim.accepted == 1
    # Get and List see the message the 202 named.
    got = (await api.get(f"{MESSAGES}{uuid}/")).json()
    assert got["message_uuid"] == uuid
    assert got["message_state"] == "queued"
    listed = (await api.get(MESSAGES, params={"to_number": "+14155550101"})).json()
    assert [m["message_uuid"] for m in listed["objects"]] == [uuid]


async def test_several_destinations_and_invalid_ones(api: httpx.AsyncClient) -> None:
    resp = await api.post(
        MESSAGES,
        json={"src": "14155550100", "dst": "14155550101<bad<ü<+1 (415) 555-0102", "text": "x"},
    )
    assert resp.status_code == 202
    body = json.loads(resp.content)
    assert len(body["message_uuid"]) == 2
    assert body["invalid_number"] == ["bad", "ü"]


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"", "body is not JSON"),
        (b"{not json", "body is not JSON"),
        (b"\xff\xfe{}", "body is not JSON"),
        (b"[" * 100_000, "body is not JSON"),
        (b"[1, 2]", "body is not a JSON object"),
        (b'{"dst": "14155550101", "text": "x"}', "exactly one of src and powerpack_uuid"),
        (
            b'{"src": "1", "powerpack_uuid": "p", "dst": "14155550101"}',
            "exactly one of src and powerpack_uuid",
        ),
        (b'{"src": "14155550100", "dst": "14155550101", "type": "SMS"}', "type must be sms"),
        (b'{"src": "14155550100", "dst": ["14155550101"]}', "dst is required"),
        (b'{"src": "14155550100", "dst": "12<x"}', "is not a valid phone number"),
    ],
)
async def test_bad_bodies_are_400_and_create_nothing(
    api: httpx.AsyncClient, sim: SimulatedPlivo, content: bytes, error: str
) -> None:
    resp = await api.post(MESSAGES, content=content, headers={"content-type": "application/json"})
    assert resp.status_code == 400
    assert error in _error_body(resp)
    assert sim.accepted == 0
    assert sim.send_requests == 1


async def test_credentials_and_account_are_checked(
    api: httpx.AsyncClient, sim: SimulatedPlivo
) -> None:
    body = {"src": "14155550100", "dst": "14155550101", "text": "x"}
    wrong = await api.post(MESSAGES, json=body, auth=(AUTH_ID, "wrong"))
    other = await api.post("/v1/Account/MAOTHERXXXXXXXXXXXXX/Message/", json=body)
    none = await api.post(MESSAGES, json=body, auth=None)
    assert [r.status_code for r in (wrong, other, none)] == [401, 401, 401]
    assert sim.accepted == 0


async def test_other_methods_and_paths_are_not_sends(api: httpx.AsyncClient) -> None:
    body = {"src": "14155550100", "dst": "14155550101", "text": "x"}
    assert (await api.put(MESSAGES, json=body)).status_code == 405
    assert (await api.post("/v1/Account//Message/", json=body)).status_code == 404
    assert (await api.post(f"/v1/Account/{AUTH_ID}/x/Message/", json=body)).status_code == 404
    # Without the trailing slash: redirected to the real path, as the framework always did.
    moved = await api.post(f"/v1/Account/{AUTH_ID}/Message", json=body)
    assert moved.status_code == 307
    assert moved.headers["location"].endswith(MESSAGES)


async def test_the_app_still_exposes_the_simulator(sim: SimulatedPlivo) -> None:
    app: Any = create_simulator_app(sim)
    assert app.state.sim is sim


async def test_send_over_real_http(live_simulator: tuple[str, SimulatedPlivo]) -> None:
    base, sim = live_simulator
    async with httpx.AsyncClient(base_url=base, auth=(AUTH_ID, TOKEN)) as client:
        answers = [
            await client.post(MESSAGES, json={"src": "14155550100", "dst": f"1415555010{i}"})
            for i in range(3)
        ]
        bad = await client.post(MESSAGES, content=b"nope")
    assert [a.status_code for a in answers] == [202, 202, 202]
    assert bad.status_code == 400
    assert sim.accepted == 3
    assert {u for a in answers for u in a.json()["message_uuid"]} == set(sim.messages)
