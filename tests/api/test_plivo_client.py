"""The Message API client against the simulator: typed outcomes for every kind of failure.

The simulator runs in-process through an ASGI transport, or on a real port where timeouts and
refused connections matter; the official SDK parses the simulator's answers as Plivo's.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from plivo_tracker.outbound.retry import Failure
from plivo_tracker.plivo.client import PlivoClient, SendError
from plivo_tracker.simulator.api import Faults, SimulatedPlivo, create_simulator_app
from tests.conftest import AUTH_ID, TOKEN, free_port

CALLBACK = "https://hooks.example.com/plivo/callback"


def _client(sim: SimulatedPlivo, token: str = TOKEN) -> PlivoClient:
    transport = httpx.ASGITransport(app=create_simulator_app(sim))
    return PlivoClient("http://simulator", AUTH_ID, token, transport=transport)


async def test_send_get_list() -> None:
    sim = SimulatedPlivo(AUTH_ID, TOKEN)
    client = _client(sim)
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


async def test_wrong_token_is_unauthorised_and_creates_nothing() -> None:
    sim = SimulatedPlivo(AUTH_ID, TOKEN)
    client = _client(sim, token="wrong")
    try:
        with pytest.raises(SendError) as err:
            await client.send(src="14155550100", dst="14155550101", text="hi")
    finally:
        await client.aclose()
    assert err.value.failure == Failure.UNAUTHORIZED
    assert err.value.status == 401
    assert sim.accepted == 0


async def test_server_errors_are_ambiguous_then_success_creates_one_message() -> None:
    sim = SimulatedPlivo(AUTH_ID, TOKEN, Faults(fail_first=2, fail_status=500))
    client = _client(sim)
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


async def test_rate_limited_carries_retry_after() -> None:
    sim = SimulatedPlivo(AUTH_ID, TOKEN, Faults(fail_first=1, fail_status=429, retry_after=7))
    client = _client(sim)
    try:
        with pytest.raises(SendError) as err:
            await client.send(src="14155550100", dst="14155550101", text="hi")
    finally:
        await client.aclose()
    assert err.value.failure == Failure.RATE_LIMITED
    assert err.value.retry_after == 7.0


async def test_invalid_destinations() -> None:
    sim = SimulatedPlivo(AUTH_ID, TOKEN)
    client = _client(sim)
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
    client = PlivoClient(base, AUTH_ID, TOKEN, timeout=httpx.Timeout(0.2, connect=1.0))
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
