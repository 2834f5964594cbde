"""The simulator's faults, Get Account, rate limits, control API and counters, over ASGI.

Every fault the sending side must survive is produced here the way Plivo would show it: failing
before or after the message exists, hanging, garbage, account-wide 401/404, and 429s from the
two documented rate limits (driven by an injected clock, so nothing waits).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from plivo_tracker.simulator.api import Faults, RollingWindow, SimulatedPlivo, create_simulator_app
from tests.conftest import AUTH_ID, TOKEN

MESSAGES = f"/v1/Account/{AUTH_ID}/Message/"
ACCOUNT = f"/v1/Account/{AUTH_ID}/"


class Clock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sim(clock: Clock) -> SimulatedPlivo:
    return SimulatedPlivo(AUTH_ID, TOKEN, clock=clock)


@pytest.fixture
async def api(sim: SimulatedPlivo) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_simulator_app(sim))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://simulator", auth=(AUTH_ID, TOKEN)
    ) as client:
        yield client


def _body(dst: str = "14155550101", **extra: Any) -> dict[str, Any]:
    return {"src": "14155550100", "dst": dst, "text": "code 123456", **extra}


async def _send(api: httpx.AsyncClient, dst: str = "14155550101") -> httpx.Response:
    return await api.post(MESSAGES, json=_body(dst))


def _is_plivo_error(resp: httpx.Response) -> bool:
    body = resp.json()
    return set(body) == {"api_id", "error"} and bool(body["api_id"]) and bool(body["error"])


# --- Send faults --------------------------------------------------------------------------


async def test_fail_first_answers_before_anything_exists(
    api: httpx.AsyncClient, sim: SimulatedPlivo
) -> None:
    sim.faults.fail_first, sim.faults.fail_status = 2, 503
    first, second, third = [await _send(api) for _ in range(3)]
    assert [first.status_code, second.status_code, third.status_code] == [503, 503, 202]
    assert _is_plivo_error(first)
    assert list(sim.messages) == third.json()["message_uuid"]
    assert (sim.accepted, sim.send_requests, sim.faults.fail_first) == (1, 3, 0)


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_fail_after_create_answers_an_error_for_a_real_message(
    api: httpx.AsyncClient, sim: SimulatedPlivo, status: int
) -> None:
    sim.faults.fail_after_create, sim.faults.fail_status = 1, status
    failed = await _send(api, "14155550101")
    assert failed.status_code == status
    assert _is_plivo_error(failed)
    [mdr] = sim.messages.values()  # it exists although the answer said otherwise
    assert (mdr["to_number"], mdr["message_state"]) == ("14155550101", "queued")
    assert sim.by_destination == {"14155550101": 1}
    listed = (await api.get(MESSAGES, params={"to_number": "+14155550101"})).json()
    assert [m["message_uuid"] for m in listed["objects"]] == [mdr["message_uuid"]]
    again = await _send(api, "14155550102")
    assert again.status_code == 202
    assert sim.accepted == 2


async def test_a_429_after_create_carries_retry_after(
    api: httpx.AsyncClient, sim: SimulatedPlivo
) -> None:
    sim.faults.fail_after_create, sim.faults.fail_status, sim.faults.retry_after = 1, 429, 7
    resp = await _send(api)
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "7"
    assert sim.accepted == 1


async def test_timeout_after_create_hangs_with_the_message_created(
    api: httpx.AsyncClient, sim: SimulatedPlivo
) -> None:
    sim.faults.timeout_after_create, sim.faults.hang_seconds = 1, 30.0
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(_send(api, "14155550101"), timeout=0.2)
    [mdr] = sim.messages.values()
    assert mdr["to_number"] == "14155550101"
    quick = await asyncio.wait_for(_send(api, "14155550102"), timeout=2)  # budget used up
    assert quick.status_code == 202


async def test_timeout_after_create_over_real_http(
    live_simulator: tuple[str, SimulatedPlivo],
) -> None:
    """A client with a short timeout gives up; the message exists all the same."""
    base, sim = live_simulator
    sim.faults.timeout_after_create, sim.faults.hang_seconds = 1, 0.5
    async with httpx.AsyncClient(base_url=base, auth=(AUTH_ID, TOKEN), timeout=0.1) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(MESSAGES, json=_body())
    assert sim.accepted == 1
    assert len(sim.messages) == 1


async def test_garbage_after_create_is_a_202_that_is_not_json(
    api: httpx.AsyncClient, sim: SimulatedPlivo
) -> None:
    sim.faults.garbage_after_create = 1
    resp = await _send(api)
    assert resp.status_code == 202
    assert resp.text == "<html>oops</html>"
    with pytest.raises(ValueError, match="Expecting value"):
        resp.json()
    assert sim.accepted == 1
    assert (await _send(api)).json()["message"] == "message(s) queued"


async def test_send_faults_apply_in_their_documented_order(
    api: httpx.AsyncClient, sim: SimulatedPlivo
) -> None:
    sim.faults = Faults(
        fail_first=1,
        fail_after_create=1,
        timeout_after_create=1,
        hang_seconds=0.0,
        garbage_after_create=1,
    )
    answers = [await _send(api, f"1415555010{i}") for i in range(5)]
    assert [a.status_code for a in answers] == [500, 500, 202, 202, 202]
    assert [a.headers["content-type"].split(";")[0] for a in answers[2:]] == [
        "application/json",
        "text/html",
        "application/json",
    ]
    assert sorted(sim.by_destination) == [f"1415555010{i}" for i in range(1, 5)]
    assert sim.faults == Faults(hang_seconds=0.0)  # every budget used up


async def test_latency_delays_an_accepted_answer(
    api: httpx.AsyncClient, sim: SimulatedPlivo
) -> None:
    sim.faults.latency = 5.0
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(_send(api), timeout=0.1)
    assert sim.accepted == 1


# --- Account-wide faults and Get Account --------------------------------------------------


async def _every_call(api: httpx.AsyncClient, uuid: str) -> list[int]:
    answers = [
        await _send(api),
        await api.get(f"{MESSAGES}{uuid}/"),
        await api.get(MESSAGES),
        await api.get(ACCOUNT),
    ]
    return [a.status_code for a in answers]


async def test_get_account_is_the_cheap_authenticated_probe(api: httpx.AsyncClient) -> None:
    resp = await api.get(ACCOUNT)
    assert resp.status_code == 200
    body = resp.json()
    assert body.pop("api_id")
    assert body == {
        "account_type": "standard",
        "auth_id": AUTH_ID,
        "cash_credits": "10.00000",
        "name": "Simulated account",
        "resource_uri": ACCOUNT,
    }
    wrong = await api.get(ACCOUNT, auth=(AUTH_ID, "not-the-token"))
    assert wrong.status_code == 401
    assert _is_plivo_error(wrong)
    other = await api.get("/v1/Account/MAYYYYYYYYYYYYYYYYYY/")
    assert other.status_code == 401


async def test_unauthorized_and_not_found_switch_at_runtime(
    api: httpx.AsyncClient, sim: SimulatedPlivo
) -> None:
    uuid = (await _send(api)).json()["message_uuid"][0]
    sim.faults.unauthorized = True
    assert await _every_call(api, uuid) == [401, 401, 401, 401]
    assert (await api.get(ACCOUNT)).json()["error"] == "Authentication credentials invalid"
    sim.faults.unauthorized, sim.faults.not_found = False, True
    assert await _every_call(api, uuid) == [404, 404, 404, 404]
    sim.faults.not_found = False
    assert await _every_call(api, uuid) == [202, 200, 200, 200]
    assert sim.accepted == 2  # only the sends that were let through created messages


# --- Rate limits ----------------------------------------------------------------------------


async def test_list_messages_allows_20_per_rolling_minute(
    api: httpx.AsyncClient, sim: SimulatedPlivo, clock: Clock
) -> None:
    for _ in range(20):
        assert (await api.get(MESSAGES)).status_code == 200
        clock.t += 1.0
    refused = await api.get(MESSAGES)
    assert refused.status_code == 429
    assert refused.json()["error"] == "too many requests"
    assert _is_plivo_error(refused)
    assert (await api.get(ACCOUNT)).status_code == 200  # other calls are not List-limited
    clock.t = 1000.0 + 60.0  # the first list leaves the window
    assert (await api.get(MESSAGES)).status_code == 200
    assert (await api.get(MESSAGES)).status_code == 429
    assert sim.stats()["rate_limited"] == 2
    assert sim.list_requests == 23


async def test_list_limit_zero_is_unlimited_and_switchable(
    api: httpx.AsyncClient, sim: SimulatedPlivo
) -> None:
    sim.faults.list_per_minute = 0
    for _ in range(30):
        assert (await api.get(MESSAGES)).status_code == 200
    sim.faults.list_per_minute = 30
    assert (await api.get(MESSAGES)).status_code == 429  # 30 already in this minute


async def test_every_call_counts_towards_300_per_5_seconds(
    api: httpx.AsyncClient, sim: SimulatedPlivo, clock: Clock
) -> None:
    uuid = (await _send(api)).json()["message_uuid"][0]
    calls = [
        lambda: _send(api),
        lambda: api.get(f"{MESSAGES}{uuid}/"),
        lambda: api.get(ACCOUNT),
    ]
    for i in range(289):
        assert (await calls[i % 3]()).status_code in (200, 202)
    for _ in range(10):
        assert (await api.get(MESSAGES)).status_code == 200  # 300 calls in all
    for call in calls:
        resp = await call()
        assert resp.status_code == 429
        assert resp.json()["error"] == "too many requests"
    assert (await api.get(MESSAGES)).status_code == 429
    assert sim.rate_limited == 4
    clock.t += 5.0
    assert (await _send(api)).status_code == 202


def test_rolling_window_forgets_what_it_refused() -> None:
    window = RollingWindow(5.0)
    assert [window.admit(2, t) for t in (0.0, 1.0, 2.0, 3.0, 4.9)] == [
        True,
        True,
        False,
        False,
        False,
    ]
    assert window.admit(2, 5.0)  # 0.0 left the window; refusals never entered it
    assert not window.admit(2, 5.5)
    assert all(window.admit(0, 6.0) for _ in range(100))


# --- Control API and counters ---------------------------------------------------------------


async def test_faults_can_be_read_and_changed_over_http(
    api: httpx.AsyncClient, sim: SimulatedPlivo
) -> None:
    held = sim.faults
    shown = (await api.get("/_simulator/faults", auth=None)).json()
    assert shown == {
        "fail_first": 0,
        "fail_status": 500,
        "retry_after": 1,
        "latency": 0.0,
        "fail_after_create": 0,
        "timeout_after_create": 0,
        "hang_seconds": 30.0,
        "garbage_after_create": 0,
        "unauthorized": False,
        "not_found": False,
        "list_per_minute": 20,
        "api_per_5s": 300,
    }
    changed = await api.put(
        "/_simulator/faults", json={"unauthorized": True, "fail_after_create": 2}, auth=None
    )
    assert changed.status_code == 200
    assert changed.json() == {**shown, "unauthorized": True, "fail_after_create": 2}
    assert sim.faults is held  # the same object: in-process holders see the change
    assert (held.unauthorized, held.fail_after_create) == (True, 2)
    assert (await _send(api)).status_code == 401
    await api.put("/_simulator/faults", json={"unauthorized": False}, auth=None)
    assert (await _send(api)).status_code == 500  # a fail_after_create send
    assert (await api.get("/_simulator/faults")).json()["fail_after_create"] == 1


@pytest.mark.parametrize(
    "change",
    [
        {"bogus": 1},
        {"fail_first": "3"},
        {"fail_first": 1.5},
        {"fail_first": True},
        {"fail_first": -1},
        {"unauthorized": 1},
        {"latency": "slow"},
        {"hang_seconds": -0.1},
        {"fail_status": 200},
        {"fail_first": 2, "fail_status": 200},  # all or nothing
    ],
)
async def test_bad_fault_changes_are_422_and_change_nothing(
    api: httpx.AsyncClient, sim: SimulatedPlivo, change: dict[str, Any]
) -> None:
    resp = await api.put("/_simulator/faults", json=change)
    assert resp.status_code == 422
    assert resp.json()["error"]
    assert sim.faults == Faults()


async def test_fault_changes_must_be_a_json_object(api: httpx.AsyncClient) -> None:
    assert (await api.put("/_simulator/faults", json=[1])).status_code == 422
    not_json = await api.put("/_simulator/faults", content=b"{", auth=None)
    assert not_json.status_code == 400


async def test_a_float_field_takes_an_integer(api: httpx.AsyncClient, sim: SimulatedPlivo) -> None:
    resp = await api.put("/_simulator/faults", json={"latency": 1, "list_per_minute": 0})
    assert resp.status_code == 200
    assert (sim.faults.latency, sim.faults.list_per_minute) == (1, 0)


async def test_stats_count_messages_per_destination(
    api: httpx.AsyncClient, sim: SimulatedPlivo
) -> None:
    sim.faults.fail_first = 1
    await _send(api, "14155550101")  # refused before creating: no message
    await _send(api, "14155550101")
    await _send(api, "+1 (415) 555-0101")  # the same number, written otherwise
    multi = await _send(api, "14155550102<14155550103<not-a-number")
    assert multi.json()["invalid_number"] == ["not-a-number"]
    uuid = multi.json()["message_uuid"][0]
    await api.get(f"{MESSAGES}{uuid}/")
    await api.get(MESSAGES)
    await api.get(MESSAGES)
    stats = (await api.get("/_simulator/stats", auth=None)).json()
    assert stats == {
        "send_requests": 4,
        "accepted": 4,
        "by_destination": {"14155550101": 2, "14155550102": 1, "14155550103": 1},
        "list_requests": 2,
        "get_requests": 1,
        "account_requests": 0,
        "rate_limited": 0,
        "inbound": 0,  # messages it sent to our numbers (none here)
    }


def test_faults_refuse_bad_values_at_construction() -> None:
    with pytest.raises(ValueError, match="fail_status"):
        Faults(fail_status=302)
    with pytest.raises(ValueError, match="garbage_after_create must be an integer"):
        Faults(garbage_after_create=0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not_found must be true or false"):
        Faults(not_found=1)  # type: ignore[arg-type]


async def test_the_standalone_control_api_over_real_http(
    live_simulator: tuple[str, SimulatedPlivo],
) -> None:
    """What a test does against `plivo-tracker simulate`: flip a fault mid-run, read counters."""
    base, sim = live_simulator
    async with httpx.AsyncClient(base_url=base, auth=(AUTH_ID, TOKEN)) as client:
        assert (await client.post(MESSAGES, json=_body())).status_code == 202
        flipped = await client.put("/_simulator/faults", json={"not_found": True}, auth=None)
        assert flipped.json()["not_found"] is True
        assert (await client.post(MESSAGES, json=_body())).status_code == 404
        await client.put("/_simulator/faults", json={"not_found": False}, auth=None)
        assert (await client.post(MESSAGES, json=_body("14155550102"))).status_code == 202
        stats = (await client.get("/_simulator/stats", auth=None)).json()
    assert stats["send_requests"] == 3
    assert stats["by_destination"] == {"14155550101": 1, "14155550102": 1}
    assert sim.faults.not_found is False
