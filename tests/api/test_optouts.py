"""Opt-outs over HTTP on SQLite and PostgreSQL: GET/PUT/DELETE /api/opt-outs[/{number}], and
POST /api/messages refusing opted-out recipients (422 naming each, nothing stored), with the
transactional exemption only when the operator enabled it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from plivo_tracker.app import create_app
from plivo_tracker.config import Settings
from plivo_tracker.messages.models import idempotency_keys, messages, outbox
from plivo_tracker.simulator.scenario import ScenarioConfig
from tests.api.test_inbound import _post as post_inbound
from tests.api.test_inbound import inbound_fields
from tests.conftest import AUTH, ServiceOpener, new_uuid, projecting_client, until_projected

A, B, C = "+14155550101", "+14155550102", "+14155550103"
JSON = {"Content-Type": "application/json"}


def _path(number: str) -> str:
    return "/api/opt-outs/" + number.replace("+", "%2B")


def _send(to: list[str] | str, **extra: Any) -> dict[str, Any]:
    return {"to": to, "text": "Your code is 482193", "from": "14155550100", **extra}


async def _count(engine: AsyncEngine, table: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_put_get_delete_and_history(client: httpx.AsyncClient) -> None:
    before = await client.get(_path(A))
    assert before.status_code == 200
    assert before.json() == {
        "number": A,
        "opted_out": False,
        "opted_out_at": None,
        "source": None,
        "keyword": None,
        "message_id": None,
        "note": None,
        "history": [],
    }
    put = await client.put(_path(A), json={"note": "asked by phone"})
    assert put.status_code == 200, put.text
    state = put.json()
    assert state["opted_out"] is True
    assert (state["source"], state["note"], state["keyword"]) == ("api", "asked by phone", None)
    assert state["opted_out_at"].endswith("Z")
    again = await client.put(_path(A), headers=JSON)  # no body: harmless, nothing changes
    assert again.status_code == 200
    assert again.json() == state
    assert (await client.get(_path(A))).json() == state

    deleted = await client.delete(_path(A), headers=JSON)
    assert deleted.status_code == 200
    assert deleted.json()["opted_out"] is False
    assert (await client.delete(_path(A), headers=JSON)).json() == deleted.json()
    history = deleted.json()["history"]
    assert [(h["action"], h["source"], h["note"]) for h in history] == [
        ("opt_out", "api", "asked by phone"),
        ("opt_in", "api", None),
    ]
    assert history[0]["id"] < history[1]["id"]


@pytest.mark.parametrize("spelling", ["%2B14155550101", "+14155550101", "14155550101"])
async def test_numbers_in_paths(client: httpx.AsyncClient, spelling: str) -> None:
    resp = await client.put("/api/opt-outs/" + spelling, headers=JSON)
    assert resp.status_code == 200
    assert resp.json()["number"] == A


@pytest.mark.parametrize("bad", ["12", "not-a-number", "%2B999123", "+1415555010112345"])
async def test_bad_numbers_are_422_in_the_envelope(client: httpx.AsyncClient, bad: str) -> None:
    for method in ("GET", "PUT", "DELETE"):
        resp = await client.request(method, "/api/opt-outs/" + bad, headers=JSON)
        assert resp.status_code == 422, (method, resp.text)
        error = resp.json()["error"]
        assert error["code"] == "invalid_parameter"
        assert error["parameter"] == "number"
    assert (await client.get("/api/opt-outs")).json()["opt_outs"] == []


async def test_writes_follow_the_api_access_rules(app: Any) -> None:
    async with projecting_client(app) as anonymous:
        assert (await anonymous.put(_path(A), headers=JSON)).status_code == 401
        assert (await anonymous.get("/api/opt-outs")).status_code == 401
    async with projecting_client(app, headers=AUTH) as client:
        form = await client.put(_path(A), content=b"", headers={"Content-Type": "text/plain"})
        assert form.status_code == 415
        assert (await client.delete(_path(A))).status_code == 415  # no JSON content type
        cross = await client.put(_path(A), headers={**JSON, "Origin": "https://evil.example"})
        assert cross.status_code == 403
        extra = await client.put(_path(A), json={"note": "x", "surprise": 1})
        assert extra.status_code == 422
        assert (await client.put(_path(A), json={"note": "x" * 501})).status_code == 422
        assert (await client.get(_path(A))).json()["opted_out"] is False


async def test_list_in_cursor_pages(client: httpx.AsyncClient) -> None:
    numbers = [f"+1415555{n:04d}" for n in range(110, 125)]
    for number in reversed(numbers):
        assert (await client.put(_path(number), headers=JSON)).status_code == 200
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 4}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/api/opt-outs", params=params)).json()
        assert len(page["opt_outs"]) <= 4
        seen += [o["number"] for o in page["opt_outs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == numbers  # in number order, each once
    item = (await client.get("/api/opt-outs", params={"limit": 1})).json()["opt_outs"][0]
    assert set(item) == {"number", "opted_out_at", "source", "keyword", "message_id", "note"}
    bad = await client.get("/api/opt-outs", params={"cursor": "x'; --"})
    assert bad.status_code == 422


# ---- sending -----------------------------------------------------------------------------------


async def test_a_send_to_an_opted_out_number_is_refused_and_nothing_is_stored(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await client.put(_path(B), headers=JSON)
    await client.put(_path(C), headers=JSON)
    resp = await client.post(
        "/api/messages",
        json=_send([A, "(415) 555-0199", "1 415 555 0102", C, B]),
        headers={"Idempotency-Key": "order-1"},
    )
    # The invalid number is reported first, before the opt-outs are looked at.
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "invalid_request"

    resp = await client.post(
        "/api/messages",
        json=_send([A, "1 415 555 0102", C, B]),
        headers={"Idempotency-Key": "order-1"},
    )
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "opted_out"
    assert B in error["message"]
    assert C in error["message"]
    assert [(p["index"], p["value"], p["number"], p["reason"]) for p in error["problems"]] == [
        (1, "1 415 555 0102", B, "opted_out"),
        (2, C, C, "opted_out"),
    ]  # B given twice, named once, at its first place
    # Nothing at all: not for A either, and the Idempotency-Key is still free.
    assert await _count(engine, messages) == 0
    assert await _count(engine, outbox) == 0
    assert await _count(engine, idempotency_keys) == 0

    await client.delete(_path(B), headers=JSON)
    await client.delete(_path(C), headers=JSON)
    resp = await client.post(
        "/api/messages", json=_send([A, B, C]), headers={"Idempotency-Key": "order-1"}
    )
    assert resp.status_code == 202, resp.text
    assert [m["to"] for m in resp.json()["messages"]] == [A, B, C]


async def test_transactional_alone_is_still_refused(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await client.put(_path(A), headers=JSON)
    resp = await client.post("/api/messages", json=_send(A, transactional=True))
    assert resp.status_code == 422
    assert resp.json()["error"]["problems"][0]["reason"] == "opted_out"
    assert await _count(engine, messages) == 0
    check = await client.post("/api/messages/validate", json=_send([A, B], transactional=True))
    assert check.json()["valid"] is False
    assert [p["number"] for p in check.json()["problems"]] == [A]


@pytest.fixture
async def exempting_client(
    make_settings: Callable[..., Settings], db_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(database_url=db_url, opt_out_transactional_exemption=True)
    app = create_app(settings, migrate=False, dispatch=False)
    async with LifespanManager(app), projecting_client(app, headers=AUTH) as client:
        yield client


async def test_the_exemption_needs_the_operator_and_the_request(
    exempting_client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    client = exempting_client
    await client.put(_path(A), headers=JSON)
    plain = await client.post("/api/messages", json=_send([A, B]))
    assert plain.status_code == 422  # not transactional: refused as always
    assert (await client.post("/api/messages/validate", json=_send([A, B]))).json()[
        "valid"
    ] is False
    check = await client.post("/api/messages/validate", json=_send([A, B], transactional=True))
    assert check.json()["valid"] is True
    resp = await client.post("/api/messages", json=_send([A, B], transactional=True))
    assert resp.status_code == 202, resp.text
    assert [m["to"] for m in resp.json()["messages"]] == [A, B]
    assert await _count(engine, outbox) == 2


async def test_stop_then_send_refused_start_then_allowed(client: httpx.AsyncClient) -> None:
    """Signed inbound messages through /plivo/inbound: the projector applies a STOP's keyword
    in the pass that stores the message, so a send to that number is refused; START and it is
    allowed again. Every change names the message that caused it."""

    async def receive(text: str) -> int:
        uuid = new_uuid()
        fields = inbound_fields(uuid, text, From=A.lstrip("+"), To="14155550100")
        assert (await post_inbound(client, fields)).status_code == 200  # applied on return
        return int((await client.get(f"/api/messages/{uuid}")).json()["id"])

    stop = await receive("  Stop ")
    refused = await client.post("/api/messages", json=_send(A))
    assert refused.status_code == 422
    assert refused.json()["error"]["problems"][0]["number"] == A
    assert refused.json()["error"]["problems"][0]["reason"] == "opted_out"
    shown = (await client.get(_path(A))).json()
    assert (shown["source"], shown["keyword"], shown["message_id"]) == ("keyword", "STOP", stop)
    chat = await receive("Stop sending me these please")  # a sentence, not a keyword
    assert (await client.get(_path(A))).json()["opted_out"] is True
    start = await receive("START")
    allowed = await client.post("/api/messages", json=_send(A))
    assert allowed.status_code == 202
    history = (await client.get(_path(A))).json()["history"]
    assert [(h["action"], h["message_id"]) for h in history] == [
        ("opt_out", stop),
        ("opt_in", start),
    ]
    assert chat not in [h["message_id"] for h in history]


async def test_openapi_documents_the_routes(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert set(spec["paths"]["/api/opt-outs/{number}"]) == {"get", "put", "delete"}
    assert "get" in spec["paths"]["/api/opt-outs"]
    send = spec["components"]["schemas"]["SendRequest"]["properties"]
    assert send["transactional"]["type"] == "boolean"
    assert "OptOutState" in spec["components"]["schemas"]


@pytest.mark.parametrize("exempt", [False, True], ids=["refused", "transactional_exempt"])
async def test_a_stop_that_arrives_while_a_message_waits_stops_it(
    simulator_service: ServiceOpener, exempt: bool
) -> None:
    """A message queued before its recipient says STOP (sending paused here; in life, a backlog
    or a resend's backoff) fails at dispatch with the reason and never reaches Plivo, unless it
    is transactional and the operator enabled that exemption."""
    scenario = ScenarioConfig(speed=200, fail_rate=0.0, undelivered_rate=0.0, dup_rate=0.0)
    async with simulator_service(scenario, opt_out_transactional_exemption=exempt) as (client, app):
        sim = app.state.sending.simulator
        await client.post("/api/dispatch/pause", json={"reason": "a backlog"})
        body = _send(A, transactional=True) if exempt else _send(A)
        queued = await client.post("/api/messages", json=body)
        assert queued.status_code == 202, queued.text
        message_id = queued.json()["messages"][0]["id"]
        _, status = await sim.receive(A.lstrip("+"), "14155550100", "STOP", ())
        assert status == 200
        await until_projected(app)
        assert (await client.get(_path(A))).json()["opted_out"] is True
        assert (await client.post("/api/dispatch/resume", json={})).status_code == 200

        async def settled() -> dict[str, Any]:
            async with asyncio.timeout(15):
                while True:
                    msg = (await client.get(f"/api/messages/{message_id}")).json()
                    if msg["status"] not in ("accepted", "queued", "sent"):
                        return dict(msg)
                    await asyncio.sleep(0.05)

        msg = await settled()
    if exempt:
        assert msg["status"] == "delivered"
        assert sim.accepted == 1
    else:
        assert msg["status"] == "failed"
        assert msg["error_detail"].startswith("opted_out")
        assert sim.accepted == 0  # never sent
        assert [a["outcome"] for a in msg["attempts"]] == ["failed"]
