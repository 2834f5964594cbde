"""The Message API client against the simulator: typed outcomes for every kind of failure.

The simulator is served on a real loopback port (the client speaks HTTP to it, as to Plivo);
the official SDK parses the simulator's answers as Plivo's.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from plivo_tracker.outbound.retry import Failure
from plivo_tracker.plivo.client import PlivoClient, SendError, Timeout
from plivo_tracker.simulator.api import Faults, SimulatedPlivo, create_simulator_app
from tests.conftest import AUTH_ID, TOKEN, PlivoOpener, ServeASGI, free_port

CALLBACK = "https://hooks.example.com/plivo/callback"


async def test_send_get_list(plivo_over_http: PlivoOpener) -> None:
    sim = SimulatedPlivo(AUTH_ID, TOKEN)
    client = await plivo_over_http(sim)
    try:
        accepted = await client.send(
            src="14155550100", dst="+1 (415) 555-0101", text="hi", url=CALLBACK
        )
        assert len(accepted.message_uuids) == 1
        assert accepted.api_id
        mdr = await client.get_message(accepted.message_uuids[0])
        assert mdr is not None
        assert mdr["message_state"] == "queued"
        assert mdr["to_number"] == "14155550101"
        assert "_callback_url" not in mdr
        assert await client.get_message("00000000-0000-0000-0000-000000000000") is None
        page = await client.list_page(
            {"to_number": "+14155550101", "message_direction": "outbound"}
        )
        assert [m["message_uuid"] for m in page["objects"]] == accepted.message_uuids
    finally:
        await client.aclose()
    assert sim.messages[accepted.message_uuids[0]]["_callback_url"] == CALLBACK


async def test_wrong_token_is_unauthorised_and_creates_nothing(
    plivo_over_http: PlivoOpener,
) -> None:
    sim = SimulatedPlivo(AUTH_ID, TOKEN)
    client = await plivo_over_http(sim, token="wrong")
    try:
        with pytest.raises(SendError) as err:
            await client.send(src="14155550100", dst="14155550101", text="hi")
    finally:
        await client.aclose()
    assert err.value.failure == Failure.UNAUTHORIZED
    assert err.value.status == 401
    assert sim.accepted == 0


async def test_server_errors_are_ambiguous_then_success_creates_one_message(
    plivo_over_http: PlivoOpener,
) -> None:
    sim = SimulatedPlivo(AUTH_ID, TOKEN, Faults(fail_first=2, fail_status=500))
    client = await plivo_over_http(sim)
    failures = []
    try:
        for _ in range(3):
            try:
                await client.send(src="14155550100", dst="14155550101", text="hi")
            except SendError as exc:
                failures.append(exc.failure)
    finally:
        await client.aclose()
    assert failures == [Failure.AMBIGUOUS, Failure.AMBIGUOUS]
    assert sim.send_requests == 3
    assert sim.accepted == 1


async def test_rate_limited_carries_retry_after(plivo_over_http: PlivoOpener) -> None:
    sim = SimulatedPlivo(AUTH_ID, TOKEN, Faults(fail_first=1, fail_status=429, retry_after=7))
    client = await plivo_over_http(sim)
    try:
        with pytest.raises(SendError) as err:
            await client.send(src="14155550100", dst="14155550101", text="hi")
    finally:
        await client.aclose()
    assert err.value.failure == Failure.RATE_LIMITED
    assert err.value.retry_after == 7.0


async def test_invalid_destinations(plivo_over_http: PlivoOpener) -> None:
    sim = SimulatedPlivo(AUTH_ID, TOKEN)
    client = await plivo_over_http(sim)
    try:
        with pytest.raises(SendError) as err:
            await client.send(src="14155550100", dst="not-a-number", text="hi")
        partial = await client.send(src="14155550100", dst="14155550101<12<14155550101", text="hi")
    finally:
        await client.aclose()
    assert err.value.failure == Failure.REJECTED
    assert err.value.status == 400
    assert "not a valid phone number" in err.value.detail
    assert len(partial.message_uuids) == 1  # duplicates dropped
    assert partial.invalid_numbers == ["12"]


async def test_timeout_after_sending_is_ambiguous(
    live_simulator: tuple[str, SimulatedPlivo],
) -> None:
    base, sim = live_simulator
    sim.faults.latency = 1.0
    client = PlivoClient(base, AUTH_ID, TOKEN, timeout=Timeout(0.2, connect=1.0))
    try:
        with pytest.raises(SendError) as err:
            await client.send(src="14155550100", dst="14155550101", text="hi")
    finally:
        await client.aclose()
    assert err.value.failure == Failure.AMBIGUOUS
    await asyncio.sleep(1.0)
    assert sim.send_requests == 1  # it did reach the API: resending blindly could duplicate


async def test_nothing_listening_is_not_sent() -> None:
    client = PlivoClient(f"http://127.0.0.1:{free_port()}", AUTH_ID, TOKEN)
    try:
        with pytest.raises(SendError) as err:
            await client.send(src="14155550100", dst="14155550101", text="hi")
    finally:
        await client.aclose()
    assert err.value.failure == Failure.NOT_SENT


async def test_official_sdk_parses_the_simulator(
    live_simulator: tuple[str, SimulatedPlivo], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK's own client, pointed at the simulator, reads its answers like Plivo's."""
    import plivo
    import plivo.rest.client

    base, sim = live_simulator
    monkeypatch.setattr(plivo.rest.client, "PLIVO_API_BASE_URI", base + "/v1/Account")

    def send_and_get() -> tuple[list[str], str]:
        sdk = plivo.RestClient(AUTH_ID, TOKEN)
        created = sdk.messages.create(src="14155550100", dst="14155550101", text="hi")
        fetched = sdk.messages.get(created.message_uuid[0])
        return list(created.message_uuid), str(fetched.message_state)

    uuids, state = await asyncio.to_thread(send_and_get)
    assert len(uuids) == 1
    assert uuids[0] in sim.messages
    assert state == "queued"


# ---- every classification rule over real HTTP (docs/adr/0008) ----------------------------------


class _Answer:
    """An ASGI app that answers every request with `status` and `body` (and records them)."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.status, self.body, self.headers = status, body, headers or {}
        self.requests: list[tuple[str, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.requests.append((scope["method"], scope["path"]))
        headers = [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


PLIVO_ERROR = b'{"api_id": "a1b2", "error": "the reason"}'


@pytest.mark.parametrize(
    ("status", "body", "failure"),
    [
        (400, PLIVO_ERROR, Failure.REJECTED),
        (401, PLIVO_ERROR, Failure.UNAUTHORIZED),
        (403, PLIVO_ERROR, Failure.FORBIDDEN),
        (404, PLIVO_ERROR, Failure.MISCONFIGURED),
        (405, PLIVO_ERROR, Failure.MISCONFIGURED),
        (429, PLIVO_ERROR, Failure.RATE_LIMITED),
        (500, PLIVO_ERROR, Failure.AMBIGUOUS),
        (502, b"<html>bad gateway</html>", Failure.AMBIGUOUS),
        (503, b"", Failure.AMBIGUOUS),
        (202, b"<html>oops</html>", Failure.AMBIGUOUS),
        (202, b'{"api_id": "a1b2", "message_uuid": "not-a-list"}', Failure.AMBIGUOUS),
        (200, b'{"api_id": "a1b2", "message_uuid": [""]}', Failure.AMBIGUOUS),
        (202, b'{"api_id": "a1b2", "message_uuid": []}', Failure.REJECTED),
        (307, b"", Failure.REJECTED),  # a redirect is an answer, never followed
    ],
)
async def test_every_answer_is_classified(
    serve_asgi: ServeASGI, status: int, body: bytes, failure: Failure
) -> None:
    app = _Answer(status, body, {"Location": "/elsewhere/"} if status == 307 else None)
    client = PlivoClient(await serve_asgi(app), AUTH_ID, TOKEN)
    try:
        with pytest.raises(SendError) as err:
            await client.send(src="14155550100", dst="14155550101", text="hi")
    finally:
        await client.aclose()
    assert err.value.failure == failure
    assert err.value.status == status
    if b"a1b2" in body:
        assert err.value.api_id == "a1b2"  # Plivo's request id, kept for support
    if body == PLIVO_ERROR:
        assert err.value.detail == "the reason"
    assert app.requests == [("POST", f"/v1/Account/{AUTH_ID}/Message/")]


async def test_retry_after_as_an_http_date(serve_asgi: ServeASGI) -> None:
    app = _Answer(429, PLIVO_ERROR, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    client = PlivoClient(await serve_asgi(app), AUTH_ID, TOKEN)
    try:
        with pytest.raises(SendError) as err:
            await client.send(src="14155550100", dst="14155550101", text="hi")
    finally:
        await client.aclose()
    assert err.value.failure == Failure.RATE_LIMITED
    assert err.value.retry_after == 0.0  # in the past: no wait


async def test_a_connection_closed_after_the_request_is_ambiguous() -> None:
    """The server read the whole request, then the connection dropped without an answer: the
    message may exist."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.transport.abort()  # reset, no answer

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = PlivoClient(f"http://127.0.0.1:{port}", AUTH_ID, TOKEN)
    try:
        with pytest.raises(SendError) as err:
            await client.send(src="14155550100", dst="14155550101", text="hi")
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()
    assert err.value.failure == Failure.AMBIGUOUS
    assert len(seen) == 1  # sent once: a send is never repeated on another connection


async def test_reads_after_a_dropped_connection_are_not_sent() -> None:
    """A Get/List whose connection dropped created nothing: not sent (safe to ask again)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = PlivoClient(f"http://127.0.0.1:{port}", AUTH_ID, TOKEN)
    try:
        with pytest.raises(SendError) as err:
            await client.get_message("3a9e4b52-6c1d-11ef-9f0e-0242ac120003")
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()
    assert err.value.failure == Failure.NOT_SENT


async def test_the_pool_is_bounded_and_kept_alive(plivo_over_http: PlivoOpener) -> None:
    """20 sends, 2 connections: every send reuses one of them; none waits for a third."""
    sim = SimulatedPlivo(AUTH_ID, TOKEN)
    peers: set[tuple[str, int]] = set()
    inner = create_simulator_app(sim)

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        peers.add(tuple(scope["client"]))
        await inner(scope, receive, send)

    client = await plivo_over_http(sim, app=recording, pool=2)
    try:
        await asyncio.gather(
            *(client.send(src="14155550100", dst=f"1415555{i:04d}", text="hi") for i in range(20))
        )
        await client.get_account()
    finally:
        await client.aclose()
    assert sim.accepted == 20
    assert len(peers) <= 2


async def test_waiting_for_a_pooled_connection_past_the_connect_timeout_is_not_sent(
    plivo_over_http: PlivoOpener,
) -> None:
    """One connection, busy with a slow send: the second send gets no connection within the
    connect timeout, so it never left."""
    sim = SimulatedPlivo(AUTH_ID, TOKEN, Faults(latency=1.0))
    client = await plivo_over_http(sim, pool=1, timeout=Timeout(5.0, connect=0.2))
    try:
        slow = asyncio.create_task(client.send(src="14155550100", dst="14155550101", text="a"))
        await asyncio.sleep(0.05)
        with pytest.raises(SendError) as err:
            await client.send(src="14155550100", dst="14155550102", text="b")
        assert sim.send_requests == 1
        await slow
    finally:
        await client.aclose()
    assert err.value.failure == Failure.NOT_SENT
    assert sim.accepted == 1


async def test_in_process_client_times_out_ambiguously() -> None:
    """Simulator mode's client (no socket) keeps the same timeout and classification."""
    sim = SimulatedPlivo(AUTH_ID, TOKEN, Faults(latency=1.0))
    client = PlivoClient.in_process(
        create_simulator_app(sim), AUTH_ID, TOKEN, timeout=Timeout(0.2, connect=0.2)
    )
    try:
        with pytest.raises(SendError) as err:
            await client.send(src="14155550100", dst="14155550101", text="hi")
        sim.faults.latency = 0.0
        accepted = await client.send(src="14155550100", dst="14155550102", text="hi")
        page = await client.list_page({"to_number": "+14155550102"})
    finally:
        await client.aclose()
    assert err.value.failure == Failure.AMBIGUOUS
    assert [m["message_uuid"] for m in page["objects"]] == accepted.message_uuids


async def test_a_proxy_from_the_environment_is_used(
    plivo_over_http: PlivoOpener, serve_asgi: ServeASGI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY (as httpx honoured it): the request goes to the proxy in absolute form; a
    host in NO_PROXY is reached directly."""
    sim = SimulatedPlivo(AUTH_ID, TOKEN)
    proxied: list[str] = []
    inner = create_simulator_app(sim)

    async def proxy(scope: Any, receive: Any, send: Any) -> None:
        proxied.append(scope["path"])
        await inner(scope, receive, send)  # uvicorn takes the path from the absolute URL

    proxy_base = await serve_asgi(proxy)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy_base)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    via_proxy = PlivoClient("http://plivo.invalid", AUTH_ID, TOKEN)
    direct = await plivo_over_http(sim)  # 127.0.0.1: in NO_PROXY
    try:
        await via_proxy.send(src="14155550100", dst="14155550101", text="hi")
        await direct.send(src="14155550100", dst="14155550102", text="hi")
    finally:
        await via_proxy.aclose()
        await direct.aclose()
    assert proxied == [f"/v1/Account/{AUTH_ID}/Message/"]
    assert sim.accepted == 2
