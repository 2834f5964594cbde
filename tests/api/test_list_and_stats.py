"""GET /api/messages (filters, cursor pagination), POST /api/messages/validate and GET /api/stats
through the ASGI app on real SQLite and PostgreSQL."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from plivo_tracker.messages.models import messages
from plivo_tracker.messages.service import parse_window
from tests.conftest import count_as_projected

NOW = datetime.now(UTC)


def _row(i: int, **values: Any) -> dict[str, Any]:
    created = values.pop("created_at", NOW - timedelta(minutes=i))
    return {
        "origin": "api",
        "direction": "outbound",
        "status": "delivered",
        "to_number": f"+1415555{i:04d}",
        "from_number": "+14155550100",
        "type": "sms",
        "text": f"message number {i}",
        "has_conflict": False,
        "created_at": created,
        "updated_at": created,
        "error_code": None,
        "sent_at": None,
        "delivered_at": None,
        "mcc": None,
        "mnc": None,
        **values,
    }


async def _insert(engine: AsyncEngine, rows: list[dict[str, Any]]) -> None:
    async with engine.begin() as conn:
        ids = (await conn.execute(messages.insert().returning(messages.c.id), rows)).scalars()
        await conn.run_sync(count_as_projected, list(ids))


async def test_list_is_newest_first_with_cursor_pages(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await _insert(engine, [_row(i) for i in range(7)])
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        body = (await client.get("/api/messages", params=params)).json()
        seen += [m["id"] for m in body["messages"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == sorted(seen, reverse=True)
    assert len(seen) == len(set(seen)) == 7
    first = (await client.get("/api/messages", params={"limit": 1})).json()["messages"][0]
    assert {"id", "status", "to", "from", "created_at", "error_meaning"} <= set(first)
    assert "events" not in first


async def test_list_filters(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    await _insert(
        engine,
        [
            _row(1, status="failed", error_code="30", text="Your code is 1234"),
            _row(2, status="sent", to_number="14155559999", origin="callback", text=None),
            _row(3, created_at=NOW - timedelta(days=3)),
            _row(4, text="100% off_today"),
        ],
    )

    async def ids(**params: str) -> list[str]:
        resp = await client.get("/api/messages", params=params)
        assert resp.status_code == 200, resp.text
        return [m["to"] for m in resp.json()["messages"]]

    assert await ids(status="failed") == ["+14155550001"]
    assert await ids(status="failed,sent") == ["14155559999", "+14155550001"]
    # Callback-only messages keep Plivo's digits; either spelling finds them.
    assert await ids(to="+14155559999") == ["14155559999"]
    assert await ids(to="14155550004") == ["+14155550004"]
    assert len(await ids(**{"from": "+14155550100"})) == 4
    recent = (NOW - timedelta(days=1)).isoformat()
    assert "+14155550003" not in await ids(since=recent)
    assert await ids(until=recent) == ["+14155550003"]
    assert await ids(q="CODE IS") == ["+14155550001"]
    assert await ids(q="100%") == ["+14155550004"]  # % and _ are literal
    assert await ids(q="0%o") == []


async def test_list_by_ids_leaves_out_missing_ones(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await _insert(engine, [_row(i) for i in range(3)])
    resp = await client.get("/api/messages", params={"ids": "3,1,999"})
    assert resp.status_code == 200
    assert [m["id"] for m in resp.json()["messages"]] == [3, 1]
    bad = await client.get("/api/messages", params={"ids": "1,x"})
    assert bad.status_code == 422


@pytest.mark.parametrize(
    "params",
    [
        {"status": "deliverd"},
        {"since": "yesterday"},
        {"since": "2026-11-23T10:00:00"},
        {"limit": "0"},
    ],
)
async def test_list_bad_filters_are_422(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    resp = await client.get("/api/messages", params=params)
    assert resp.status_code == 422
    assert resp.json()["error"]["message"]


async def test_validate_reports_problems_without_sending(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    ok = await client.post(
        "/api/messages/validate",
        json={"to": ["+1 415 555 0123"], "text": "héllo ✓", "from": "+14155550100"},
    )
    assert ok.json() == {
        "valid": True,
        "recipients": ["+14155550123"],
        "encoding": "UCS-2",
        "segments": 1,
        "problems": [],
    }
    bad = (
        await client.post(
            "/api/messages/validate",
            json={"to": ["+14155550123", "12"], "text": "hi", "from": "+14155550100"},
        )
    ).json()
    assert bad["valid"] is False
    assert [(p["field"], p["index"], p["value"]) for p in bad["problems"]] == [("to", 1, "12")]
    listed = (await client.get("/api/messages")).json()["messages"]
    assert listed == []  # validation never stores anything


def _nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(p * len(ordered)) - 1]


async def test_stats_match_the_rows(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    rng = random.Random(7)
    rows = []
    sent_s: list[float] = []
    delivered_s: list[float] = []
    for i in range(120):
        created = NOW - timedelta(minutes=rng.uniform(1, 50))
        status = rng.choice(["delivered"] * 6 + ["undelivered", "failed", "sent", "queued"])
        values: dict[str, Any] = {"created_at": created, "status": status}
        if status != "queued":
            s = round(rng.uniform(0.1, 5), 3)
            values["sent_at"] = created + timedelta(seconds=s)
            sent_s.append(s)
        if status == "delivered":
            d = round(rng.uniform(1, 30), 3)
            values["delivered_at"] = created + timedelta(seconds=d)
            delivered_s.append(d)
        if status in ("undelivered", "failed"):
            values["error_code"] = rng.choice(["30", "200"])
        values["mcc"], values["mnc"] = rng.choice([("310", "260"), ("310", "410")])
        rows.append(_row(i, **values))
    # Outside the window, and a callback-only message (no latency: no request time).
    rows.append(_row(500, created_at=NOW - timedelta(hours=2), status="failed", error_code="30"))
    rows.append(_row(501, origin="callback", created_at=NOW - timedelta(minutes=5), sent_at=NOW))
    await _insert(engine, rows)

    resp = await client.get("/api/stats", params={"window": "1h"})
    assert resp.status_code == 200, resp.text
    stats = resp.json()
    in_window = rows[:120] + rows[121:]
    by_status: dict[str, int] = {}
    for r in in_window:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    assert stats["total"] == 121
    assert {k: v for k, v in stats["by_status"].items() if v} == by_status
    delivered = by_status["delivered"]
    failures = by_status.get("undelivered", 0) + by_status.get("failed", 0)
    assert stats["delivery_rate"] == round(delivered / (delivered + failures), 4)
    codes = {e["code"]: e["count"] for e in stats["errors"]}
    assert codes == {
        c: sum(1 for r in in_window if r.get("error_code") == c) for c in ("30", "200")
    }
    assert all(e["meaning"] for e in stats["errors"])
    for key, values in (("time_to_sent", sent_s), ("time_to_delivered", delivered_s)):
        got = stats["latency"][key]
        assert got["count"] == len(values)
        for p in (50, 90, 99):
            # Read from a histogram of 3-significant-digit millisecond buckets: within 1 %.
            expected = _nearest_rank(values, p / 100)
            assert got[f"p{p}"] == pytest.approx(expected, rel=0.01, abs=0.001)
    carriers = {(c["mcc"], c["mnc"]): c for c in stats["carriers"]}
    assert sum(c["total"] for c in carriers.values()) == 120
    tmo = carriers[("310", "260")]
    assert tmo["delivered"] == sum(
        1 for r in rows[:120] if r["mnc"] == "260" and r["status"] == "delivered"
    )
    points = stats["series"]["points"]
    assert len(points) == 60
    assert stats["series"]["step_seconds"] == 60
    assert sum(p["total"] for p in points) == 121
    assert sum(p["delivered"] for p in points) == delivered
    assert points == sorted(points, key=lambda p: p["t"])


async def test_stats_on_an_empty_database(client: httpx.AsyncClient) -> None:
    stats = (await client.get("/api/stats")).json()
    assert stats["window"] == "24h"
    assert stats["total"] == 0
    assert stats["delivery_rate"] is None
    assert stats["latency"]["time_to_delivered"] == {
        "count": 0,
        "p50": None,
        "p90": None,
        "p99": None,
    }


@pytest.mark.parametrize("window", ["0m", "91d", "1w", "abc", "-1h"])
async def test_stats_bad_window_is_422(client: httpx.AsyncClient, window: str) -> None:
    resp = await client.get("/api/stats", params={"window": window})
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "invalid_parameter"


def test_parse_window() -> None:
    assert parse_window("15m") == timedelta(minutes=15)
    assert parse_window(" 7D ") == timedelta(days=7)
    assert parse_window("90d") == timedelta(days=90)
