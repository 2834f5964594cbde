"""Sent at most once, never stuck, honest about Plivo failures (docs/adr/0008), on SQLite and
PostgreSQL, against the simulator's faults: a 5xx, a timeout or a garbled 202 AFTER Plivo
created the message; lookups that cannot decide; 401/403/404 from the Message API; an
operator's pause. Counted at the simulator: every message exists there exactly once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from plivo_tracker.db.engine import make_writer
from plivo_tracker.messages.models import outbox, send_attempts
from plivo_tracker.outbound.budget import Limits
from plivo_tracker.outbound.dispatcher import Dispatcher
from plivo_tracker.outbound.outbox import SendRequest, submit, validate
from plivo_tracker.plivo.client import PlivoClient, Timeout
from plivo_tracker.simulator.api import Faults, SimulatedPlivo, create_simulator_app
from plivo_tracker.simulator.scenario import ScenarioConfig
from tests.conftest import AUTH_ID, BASE_URL, TOKEN, PlivoOpener, ServiceOpener

FINAL = {"delivered", "undelivered", "failed"}
UNLIMITED = Limits(mps=None, api_per_5s=0, list_per_minute=0)


# ---- one dispatcher against the simulator over HTTP ------------------------------------------


async def _dispatcher(
    engine: AsyncEngine,
    plivo: PlivoOpener,
    sim: SimulatedPlivo,
    *,
    max_lookups: int = 3,
    app: Any = None,
    plivo_timeout: Timeout | None = None,
) -> tuple[Dispatcher, PlivoClient, Any]:
    """A dispatcher whose client reaches `sim` (or `app`, a wrapper around it) over HTTP."""
    writer = make_writer(engine)
    options = {"timeout": plivo_timeout} if plivo_timeout else {}
    client = await plivo(sim, app=app, **options)
    dispatcher = Dispatcher(
        writer,
        client,
        callback_url=BASE_URL + "/plivo/callback",
        mps=None,
        shared_bucket=False,
        reconcile_grace=0.0,
        max_lookups=max_lookups,
        limits=UNLIMITED,
    )
    return dispatcher, client, writer


async def _submit(writer: Any, *numbers: str, text: str = "hi") -> None:
    valid = validate(SendRequest(to=list(numbers), text=text), "14155550100")
    await writer.run(lambda conn: submit(conn, valid, datetime.now(UTC), None))


async def _attempts(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(
                send_attempts.c.message_id,
                send_attempts.c.outcome,
                send_attempts.c.http_status,
                send_attempts.c.detail,
                send_attempts.c.api_id,
            ).order_by(send_attempts.c.id)
        )
        return [dict(r._mapping) for r in rows]


async def _states(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list(
            (await conn.execute(select(outbox.c.state).order_by(outbox.c.message_id))).scalars()
        )


@pytest.mark.parametrize(
    "fault",
    [{"fail_after_create": 1, "fail_status": 500}, {"fail_after_create": 1, "fail_status": 503}]
    + [{"garbage_after_create": 1}],
    ids=["500 after create", "503 after create", "garbled 202 after create"],
)
async def test_an_ambiguous_answer_is_looked_up_and_adopted_never_resent(
    engine: AsyncEngine, plivo_over_http: PlivoOpener, fault: dict[str, Any]
) -> None:
    sim = SimulatedPlivo(AUTH_ID, TOKEN, Faults(**fault))
    dispatcher, client, writer = await _dispatcher(engine, plivo_over_http, sim)
    try:
        await _submit(writer, "+14155550101")
        for _ in range(4):
            await dispatcher.run_once()
    finally:
        await client.aclose()
        await writer.close()
    assert sim.accepted == 1  # counted at the simulator: exactly once
    [uuid] = sim.messages
    attempts = await _attempts(engine)
    assert [a["outcome"] for a in attempts] == ["ambiguous", "reconciled"]
    assert attempts[1]["detail"] == uuid
    assert attempts[0]["api_id"] or "garbage_after_create" in fault  # Plivo's id, when it gave one
    assert attempts[1]["api_id"]  # the List Messages answer's
    assert await _states(engine) == ["done"]


async def test_a_timeout_after_create_is_adopted_never_resent(
    engine: AsyncEngine, plivo_over_http: PlivoOpener
) -> None:
    sim = SimulatedPlivo(AUTH_ID, TOKEN, Faults(timeout_after_create=1, hang_seconds=1.0))
    dispatcher, client, writer = await _dispatcher(
        engine, plivo_over_http, sim, plivo_timeout=Timeout(0.3, connect=2.0)
    )
    try:
        await _submit(writer, "+14155550101")
        await dispatcher.run_once()
        await dispatcher.run_once()
    finally:
        await client.aclose()
        await writer.close()
    assert sim.accepted == 1
    assert [a["outcome"] for a in await _attempts(engine)] == ["ambiguous", "reconciled"]


async def test_nothing_found_after_a_5xx_before_create_allows_one_resend(
    engine: AsyncEngine, plivo_over_http: PlivoOpener
) -> None:
    sim = SimulatedPlivo(AUTH_ID, TOKEN, Faults(fail_first=1, fail_status=502))
    dispatcher, client, writer = await _dispatcher(engine, plivo_over_http, sim)
    try:
        await _submit(writer, "+14155550101")
        for _ in range(4):
            await dispatcher.run_once()
    finally:
        await client.aclose()
        await writer.close()
    assert sim.accepted == 1
    outcomes = [a["outcome"] for a in await _attempts(engine)]
    assert outcomes == ["ambiguous", "not_found", "accepted"]


class _BrokenList:
    """The simulator (ASGI), except that List Messages answers `status` with `body`."""

    def __init__(self, sim: SimulatedPlivo, status: int, body: bytes) -> None:
        self._inner = create_simulator_app(sim)
        self.status, self.body = status, body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["method"] == "GET" and scope["path"].endswith("/Message/"):
            await send({"type": "http.response.start", "status": self.status, "headers": []})
            await send({"type": "http.response.body", "body": self.body})
            return
        await self._inner(scope, receive, send)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, b"<html>maintenance</html>"),
        (200, b'{"api_id": "x", "error": "internal"}'),
        (500, b'{"api_id": "x", "error": "internal"}'),
    ],
    ids=["not JSON", "error body with 200", "500"],
)
async def test_a_lookup_that_fails_is_never_not_found(
    engine: AsyncEngine, plivo_over_http: PlivoOpener, status: int, body: bytes
) -> None:
    """An error or garbled List answer says nothing: no resend, and after the allowed lookups
    the message waits for an operator as `unknown`, with the reason."""
    sim = SimulatedPlivo(AUTH_ID, TOKEN, Faults(fail_after_create=1))
    dispatcher, client, writer = await _dispatcher(
        engine, plivo_over_http, sim, max_lookups=2, app=_BrokenList(sim, status, body)
    )
    try:
        await _submit(writer, "+14155550101")
        for _ in range(3):
            await dispatcher.run_once()
            async with engine.begin() as conn:  # no waiting for the backoff in a test
                await conn.execute(outbox.update().values(next_attempt_at=datetime.now(UTC)))
    finally:
        await client.aclose()
        await writer.close()
    assert sim.accepted == 1
    outcomes = [a["outcome"] for a in await _attempts(engine)]
    assert outcomes == ["ambiguous", "undecided", "undecided"]
    assert await _states(engine) == ["unknown"]


# ---- the whole service: API, dispatcher in process, simulator, callbacks ----------------------


@pytest.fixture
async def service(
    simulator_service: ServiceOpener,
) -> AsyncIterator[tuple[httpx.AsyncClient, SimulatedPlivo]]:
    scenario = ScenarioConfig(speed=300, fail_rate=0, undelivered_rate=0, dup_rate=0.1)
    async with simulator_service(
        scenario, reconcile_after_seconds=0, reconcile_max_lookups=1, plivo_list_per_minute=0
    ) as (client, app):
        yield client, app.state.sending.simulator


async def _until(check: Callable[[], Awaitable[bool]], seconds: float, what: str) -> None:
    try:
        async with asyncio.timeout(seconds):
            while not await check():  # noqa: ASYNC110 - polling the API as a client would
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"not {what} after {seconds} s")


async def _statuses(client: httpx.AsyncClient, ids: list[int]) -> list[str]:
    return [(await client.get(f"/api/messages/{i}")).json()["status"] for i in ids]


async def _unknown_gauge(client: httpx.AsyncClient) -> float:
    """`plivo_tracker_messages_unknown` as /metrics shows it now."""
    text = (await client.get("/metrics")).text
    [value] = [
        line.split()[1]
        for line in text.splitlines()
        if line.startswith("plivo_tracker_messages_unknown ")
    ]
    return float(value)


async def _send(client: httpx.AsyncClient, *numbers: str) -> list[int]:
    resp = await client.post("/api/messages", json={"to": list(numbers), "text": "hello"})
    assert resp.status_code == 202, resp.text
    return [m["id"] for m in resp.json()["messages"]]


async def test_undecidable_sends_wait_as_unknown_until_an_operator_resolves_them(
    service: tuple[httpx.AsyncClient, SimulatedPlivo],
) -> None:
    """Two sends to one number both answered 500 after Plivo created them: each lookup finds
    two candidates, so neither is guessed. The operator adopts one UUID for the first (the
    second cannot take it too) and resends the second."""
    client, sim = service
    sim.faults.fail_after_create = 2
    # Paused while both are queued, so that one dispatcher pass sends both before any lookup.
    await client.post("/api/dispatch/pause", json={"reason": "batching the test's sends"})
    first = await _send(client, "+14155550101")
    second = await _send(client, "+14155550101")
    ids = first + second
    assert (await client.post("/api/dispatch/resume", json={})).status_code == 200

    async def both_unknown() -> bool:
        return await _statuses(client, ids) == ["unknown", "unknown"]

    await _until(both_unknown, 15, "unknown")
    assert await _unknown_gauge(client) == 2  # what the UnknownMessages alert watches
    message = (await client.get(f"/api/messages/{ids[0]}")).json()
    assert message["settled"] is False
    assert "cannot tell which" in message["error_detail"]
    assert [a["outcome"] for a in message["attempts"]] == ["ambiguous", "undecided"]
    assert sim.accepted == 2
    uuid_a, uuid_b = list(sim.messages)

    resp = await client.post(f"/api/messages/{ids[0]}/resolve", json={"action": "adopt"})
    assert resp.status_code == 422
    resp = await client.post(
        f"/api/messages/{ids[0]}/resolve", json={"action": "adopt", "message_uuid": uuid_a}
    )
    assert resp.status_code == 200, resp.text
    resp = await client.post(
        f"/api/messages/{ids[1]}/resolve", json={"action": "adopt", "message_uuid": uuid_a}
    )
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] == "uuid_taken"
    resp = await client.post(f"/api/messages/{ids[1]}/resolve", json={"action": "resend"})
    assert resp.status_code == 200, resp.text
    again = await client.post(f"/api/messages/{ids[1]}/resolve", json={"action": "resend"})
    assert again.status_code == 409  # no longer unknown: a second resend is refused

    async def none_unknown() -> bool:  # once the projector has applied both resolutions
        return await _unknown_gauge(client) == 0

    await _until(none_unknown, 5, "no unknown message")

    async def both_final() -> bool:
        return all(s in FINAL for s in await _statuses(client, ids))

    await _until(both_final, 20, "final")
    adopted = (await client.get(f"/api/messages/{ids[0]}")).json()
    assert adopted["message_uuid"] == uuid_a
    assert adopted["settled"] is True
    resent = (await client.get(f"/api/messages/{ids[1]}")).json()
    assert resent["message_uuid"] not in (uuid_a, uuid_b)
    assert sim.accepted == 3  # the operator chose to resend: that and nothing else
    assert uuid_b in sim.messages


async def test_a_401_pauses_every_send_then_resumes_by_itself(
    service: tuple[httpx.AsyncClient, SimulatedPlivo],
) -> None:
    client, sim = service
    sim.faults.unauthorized = True
    ids = await _send(client, "+14155550101", "+14155550102", "+14155550103")

    async def degraded() -> bool:
        return (await client.get("/ready")).json()["status"] == "degraded"

    await _until(degraded, 10, "degraded")
    ready = (await client.get("/ready")).json()
    assert "PLIVO_AUTH_TOKEN" in ready["reason"]
    assert ready["dispatch"]["paused_by"] == "auto"
    assert (await client.get("/api/dispatch")).json()["paused"] is True
    assert await _statuses(client, ids) == ["accepted"] * 3  # queued, none failed
    assert sim.accepted == 0

    sim.faults.unauthorized = False  # the operator fixed the token: the probe notices

    async def all_final() -> bool:
        return all(s in FINAL for s in await _statuses(client, ids))

    await _until(all_final, 30, "final")  # first probe after 5 s
    assert sim.accepted == 3
    assert sorted(sim.by_destination.values()) == [1, 1, 1]
    assert (await client.get("/ready")).json()["status"] == "ok"
    for i in ids:
        attempts = (await client.get(f"/api/messages/{i}")).json()["attempts"]
        assert attempts[-1]["outcome"] == "accepted"
        assert {a["outcome"] for a in attempts[:-1]} <= {"paused"}


async def test_a_404_from_the_message_api_pauses_with_the_reason(
    service: tuple[httpx.AsyncClient, SimulatedPlivo],
) -> None:
    client, sim = service
    sim.faults.not_found = True
    ids = await _send(client, "+14155550101")

    async def degraded() -> bool:
        return (await client.get("/ready")).json()["status"] == "degraded"

    await _until(degraded, 10, "degraded")
    assert "PLIVO_API_URL" in (await client.get("/ready")).json()["reason"]
    assert await _statuses(client, ids) == ["accepted"]
    sim.faults.not_found = False

    async def final() -> bool:
        return (await _statuses(client, ids))[0] in FINAL

    await _until(final, 30, "final")
    assert sim.accepted == 1


async def test_a_403_with_working_credentials_fails_only_that_message(
    service: tuple[httpx.AsyncClient, SimulatedPlivo],
) -> None:
    """403 is Geo Permissions for one destination when the account itself answers."""
    client, sim = service
    sim.faults.fail_first = 1
    sim.faults.fail_status = 403
    [refused] = await _send(client, "+447911123456")

    async def failed() -> bool:
        return (await _statuses(client, [refused])) == ["failed"]

    await _until(failed, 10, "failed")
    assert (await client.get("/ready")).json()["status"] == "ok"
    [fine] = await _send(client, "+14155550101")

    async def final() -> bool:
        return (await _statuses(client, [fine]))[0] in FINAL

    await _until(final, 20, "final")


async def test_an_operator_pause_holds_until_resumed(
    service: tuple[httpx.AsyncClient, SimulatedPlivo],
) -> None:
    client, sim = service
    resp = await client.post("/api/dispatch/pause", json={"reason": "carrier maintenance"})
    assert resp.json()["paused_by"] == "operator"
    ids = await _send(client, "+14155550101")
    await asyncio.sleep(1.5)  # a dispatcher pass or two: nothing may leave
    assert sim.send_requests == 0
    ready = (await client.get("/ready")).json()
    assert ready["status"] == "degraded"
    assert "carrier maintenance" in ready["reason"]
    resp = await client.post("/api/dispatch/resume", json={})
    assert resp.json()["paused"] is False

    async def final() -> bool:
        return (await _statuses(client, ids))[0] in FINAL

    await _until(final, 20, "final")
    assert sim.accepted == 1


class _Recording:
    """The simulator (ASGI), recording the JSON body of every send."""

    def __init__(self, sim: SimulatedPlivo) -> None:
        self._inner = create_simulator_app(sim)
        self.sends: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["method"] != "POST":
            await self._inner(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        self.sends.append(json.loads(body))
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self._inner(scope, replay, send)


async def test_send_options_reach_plivo_as_documented(
    engine: AsyncEngine, plivo_over_http: PlivoOpener
) -> None:
    sim = SimulatedPlivo(AUTH_ID, TOKEN)
    recording = _Recording(sim)
    dispatcher, client, writer = await _dispatcher(engine, plivo_over_http, sim, app=recording)
    request = SendRequest.model_validate(
        {
            "to": "+919812345678",
            "text": "Your OTP is 123456",
            "message_expiry": 300,
            "log": "number_only",
            "trackable": True,
            "dlt_entity_id": "1201159170000000000",
            "dlt_template_id": "1207160000000000000",
            "dlt_template_category": "transactional",
        }
    )
    valid = validate(request, "14155550100")
    try:
        await writer.run(lambda conn: submit(conn, valid, datetime.now(UTC), None))
        plain = validate(SendRequest(to="+14155550101", text="hi"), "14155550100")
        await writer.run(lambda conn: submit(conn, plain, datetime.now(UTC), None))
        await dispatcher.run_once()
    finally:
        await client.aclose()
        await writer.close()
    first, second = sorted(recording.sends, key=lambda b: b["dst"], reverse=True)
    assert first["message_expiry"] == 300
    assert first["log"] == "number_only"
    assert first["trackable"] is True
    assert first["dlt_template_category"] == "transactional"
    assert first["dst"] == "919812345678"
    assert second["log"] == "true"  # PLIVO_LOG's default
    assert "message_expiry" not in second


@pytest.mark.parametrize(
    "body",
    [
        {"to": "+14155550101", "text": "x", "message_expiry": 4},
        {"to": "+14155550101", "text": "x", "message_expiry": 10_800},
        {"to": "+14155550101", "text": "x", "log": "yes"},
        {"to": "+14155550101", "text": "x", "media_ids": ["m-1"]},
        {"to": "+14155550101", "text": "x", "dlt_entity_id": ""},
    ],
    ids=["expiry too short", "expiry too long", "bad log", "media_ids on sms", "empty dlt"],
)
async def test_bad_send_options_are_refused(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    resp = await client.post("/api/messages", json=body)
    assert resp.status_code == 422, resp.text
