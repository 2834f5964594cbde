"""List Messages (§1.6) and the MDR shape, as the reconciler sees them, over ASGI.

Message times come from an injected UTC clock, so the time filters, the 24 h default window and
newest-first order are checked against known instants.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from plivo_tracker.simulator.api import Faults, SimulatedPlivo, create_simulator_app
from tests.conftest import AUTH_ID, TOKEN

MESSAGES = f"/v1/Account/{AUTH_ID}/Message/"
T0 = datetime(2026, 11, 29, 10, 0, 0, 400000, tzinfo=UTC)
MDR_TIME = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\+00:00"


class Now:
    """The simulator's wall clock, set by the test."""

    def __init__(self) -> None:
        self.at = T0

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def now() -> Now:
    return Now()


@pytest.fixture
def sim(now: Now) -> SimulatedPlivo:
    return SimulatedPlivo(AUTH_ID, TOKEN, Faults(list_per_minute=0), now=now)


@pytest.fixture
async def api(sim: SimulatedPlivo) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_simulator_app(sim))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://simulator", auth=(AUTH_ID, TOKEN)
    ) as client:
        yield client


async def _send(api: httpx.AsyncClient, dst: str, **extra: Any) -> str:
    body = {"src": "14155550100", "dst": dst, "text": "hello", **extra}
    resp = await api.post(MESSAGES, json=body)
    assert resp.status_code == 202, resp.text
    uuid: str = resp.json()["message_uuid"][0]
    return uuid


async def _uuids(api: httpx.AsyncClient, **params: str | int) -> list[str]:
    resp = await api.get(MESSAGES, params=params)
    assert resp.status_code == 200, resp.text
    return [m["message_uuid"] for m in resp.json()["objects"]]


async def _at(api: httpx.AsyncClient, now: Now, offsets: list[float]) -> list[str]:
    """One message at T0 + each offset (seconds), to distinct numbers."""
    uuids = []
    for i, offset in enumerate(offsets):
        now.at = T0 + timedelta(seconds=offset)
        uuids.append(await _send(api, f"1415555{i:04d}"))
    now.at = T0 + timedelta(minutes=10)
    return uuids


async def test_numbers_match_with_or_without_plus(api: httpx.AsyncClient) -> None:
    mine = await _send(api, "+1 415 555 0101")
    await _send(api, "14155550102")
    for to in ("+14155550101", "14155550101"):
        assert await _uuids(api, to_number=to) == [mine]
    both = await _uuids(api, from_number="+14155550100")
    assert len(both) == 2
    assert await _uuids(api, to_number="4155550101") == []  # exact, not a suffix match


async def test_state_type_direction_and_error_code_filters(
    api: httpx.AsyncClient, sim: SimulatedPlivo
) -> None:
    sms = await _send(api, "14155550101")
    mms = await _send(api, "14155550102", type="mms", media_urls=["https://x.example/a.png"])
    failed = await _send(api, "14155550103")
    sim.messages[sms].update(message_state="delivered", error_code="000")
    sim.messages[failed].update(message_state="failed", error_code="450")
    assert await _uuids(api, message_state="delivered") == [sms]
    assert await _uuids(api, message_state="queued") == [mms]
    assert await _uuids(api, message_type="mms") == [mms]
    assert await _uuids(api, error_code="450") == [failed]
    assert await _uuids(api, error_code="000") == [sms]
    assert len(await _uuids(api, message_direction="outbound")) == 3
    assert await _uuids(api, message_direction="inbound") == []
    assert await _uuids(api, message_state="failed", to_number="14155550101") == []


async def test_time_filters_compare_instants_not_strings(api: httpx.AsyncClient, now: Now) -> None:
    # 10:00:00, 10:00:30, 10:01:00, 10:02:00 (MDR times keep whole seconds).
    a, b, c, d = await _at(api, now, [0, 30, 60, 120])
    assert set(await _uuids(api, message_time__gte="2026-11-29 10:00:30")) == {b, c, d}
    assert set(await _uuids(api, message_time__gt="2026-11-29 10:00:30")) == {c, d}
    assert set(await _uuids(api, message_time__lt="2026-11-29 10:01")) == {a, b}
    # As strings "2026-11-29 10:01:00+00:00" > "2026-11-29 10:01": as instants they are equal.
    assert set(await _uuids(api, message_time__lte="2026-11-29 10:01")) == {a, b, c}
    assert set(await _uuids(api, message_time__lte="2026-11-29 10:00:30.000000")) == {a, b}
    assert set(await _uuids(api, message_time__gte="2026-11-29 10:00:00.5")) == {b, c, d}
    assert await _uuids(api, message_time="2026-11-29 10:01:00") == [c]
    window = {"message_time__gt": "2026-11-29 10:00", "message_time__lt": "2026-11-29 10:02"}
    assert set(await _uuids(api, **window)) == {b, c}


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-29",
        "2026-11-29T10:00",
        "2026-11-29 10:00:00Z",
        "2026-13-01 10:00",
        "2026-11-29 25:00",
        "2026-11-29 10:00:00.1234567",
        "yesterday",
        "",
    ],
)
async def test_malformed_times_are_400(api: httpx.AsyncClient, value: str) -> None:
    resp = await api.get(MESSAGES, params={"message_time__gte": value})
    assert resp.status_code == 400
    assert set(resp.json()) == {"api_id", "error"}


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "21"}, {"limit": "ten"}, {"limit": "-1"}, {"offset": "-1"}],
)
async def test_out_of_range_pages_are_400(api: httpx.AsyncClient, params: dict[str, str]) -> None:
    assert (await api.get(MESSAGES, params=params)).status_code == 400


async def test_without_a_time_filter_only_the_last_24_hours(
    api: httpx.AsyncClient, now: Now
) -> None:
    old, fresh = await _at(api, now, [0, 3600])
    now.at = T0 + timedelta(hours=24, minutes=30)
    assert await _uuids(api) == [fresh]
    assert await _uuids(api, message_time__gte="2026-11-01 00:00") == [fresh, old]


async def test_pages_follow_meta_next_keeping_the_filters(api: httpx.AsyncClient, now: Now) -> None:
    for i in range(45):
        now.at = T0 + timedelta(seconds=i)
        await _send(api, "14155550101")
    await _send(api, "14155550199")  # filtered out
    seen: list[dict[str, Any]] = []
    path: str | None = MESSAGES + "?to_number=%2B14155550101&message_direction=outbound"
    pages = []
    while path is not None:
        page = (await api.get(path)).json()
        pages.append(page["meta"])
        seen.extend(page["objects"])
        path = page["meta"]["next"]
    assert [(m["offset"], m["limit"], m["total_count"]) for m in pages] == [
        (0, 20, 45),
        (20, 20, 45),
        (40, 20, 45),
    ]
    assert [len(p) for p in (seen[:20], seen[20:40], seen[40:])] == [20, 20, 5]
    assert len({m["message_uuid"] for m in seen}) == 45
    times = [m["message_time"] for m in seen]
    assert times == sorted(times, reverse=True)  # newest first
    second = urlsplit(pages[0]["next"])
    assert second.path == MESSAGES
    assert parse_qs(second.query) == {
        "limit": ["20"],
        "offset": ["20"],
        "to_number": ["+14155550101"],
        "message_direction": ["outbound"],
    }
    assert pages[0]["previous"] is None
    assert parse_qs(urlsplit(pages[2]["previous"]).query)["offset"] == ["20"]


async def test_limit_and_offset_pick_the_page(api: httpx.AsyncClient, now: Now) -> None:
    uuids = await _at(api, now, [0, 1, 2, 3, 4])
    newest_first = uuids[::-1]
    page = (await api.get(MESSAGES, params={"limit": 2, "offset": 1})).json()
    assert [m["message_uuid"] for m in page["objects"]] == newest_first[1:3]
    assert parse_qs(urlsplit(page["meta"]["next"]).query) == {"limit": ["2"], "offset": ["3"]}
    assert parse_qs(urlsplit(page["meta"]["previous"]).query) == {"limit": ["2"], "offset": ["0"]}
    last = (await api.get(MESSAGES, params={"limit": 2, "offset": 4})).json()
    assert last["meta"]["next"] is None


async def test_an_mdr_looks_like_plivos(api: httpx.AsyncClient) -> None:
    long_text = "x" * 200  # two GSM-7 parts
    uuid = await _send(api, "14155550101", text=long_text)
    listed = (await api.get(MESSAGES)).json()["objects"][0]
    got = (await api.get(f"{MESSAGES}{uuid}/")).json()
    assert got.pop("api_id")
    assert got == listed
    assert got["message_time"] == "2026-11-29 10:00:00+00:00"
    assert got["message_updated_time"] == got["message_time"]
    assert got["message_sent_time"] is None
    assert (got["message_state"], got["error_code"], got["units"]) == ("queued", None, 2)
    assert (got["total_rate"], got["total_amount"]) == ("0.00500", "0.01000")
    assert got["resource_uri"] == f"{MESSAGES}{uuid}/"
    assert not any(key.startswith("_") for key in got)
    assert (await api.get(f"{MESSAGES}not-a-uuid/")).status_code == 404
