"""Hostile strings on every route that takes text: always a 4xx with a JSON body that encodes,
`X-Content-Type-Options: nosniff` on every response, and nothing written (issue 9)."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from plivo_tracker.messages.models import idempotency_keys, messages, outbox, quarantine
from plivo_tracker.optouts.models import opt_out_events, opt_outs
from tests.conftest import callback_fields, new_nonce, new_uuid, signed_form
from tests.hostile import Request, all_requests

CASES = all_requests()


async def _count(engine: AsyncEngine, table: object) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())  # type: ignore[arg-type]


async def _request(client: httpx.AsyncClient, req: Request) -> httpx.Response:
    method, target, body, headers = req
    return await client.request(method, target, content=body, headers=headers)


def _assert_clean_error(resp: httpx.Response) -> dict[str, object]:
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text)
    assert resp.headers["x-content-type-options"] == "nosniff"
    payload = json.loads(resp.content.decode("utf-8"))  # strict UTF-8: no lone surrogate
    assert set(payload) == {"error"}
    assert payload["error"]["code"]
    return payload


@pytest.mark.parametrize("case", sorted(CASES))
async def test_hostile_strings_get_a_4xx_and_change_nothing(
    client: httpx.AsyncClient, engine: AsyncEngine, case: str
) -> None:
    resp = await _request(client, CASES[case])
    _assert_clean_error(resp)
    for table in (messages, outbox, idempotency_keys, opt_outs, opt_out_events):
        assert await _count(engine, table) == 0


async def test_the_reported_request_names_both_fields(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        "/api/messages",
        content=b'{"to": "\\ud800", "text": "\\u0000"}',
        headers={"content-type": "application/json"},
    )
    payload = _assert_clean_error(resp)
    assert resp.status_code == 422
    problems = payload["error"]["problems"]  # type: ignore[index]
    assert {tuple(p["loc"]) for p in problems} == {("body", "to"), ("body", "text")}
    assert "\\ud800" not in resp.text
    assert "\ud800" not in resp.text


async def test_texts_that_are_fine_still_pass(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    # Lines, tabs, emoji and CJK are text; only controls and broken Unicode are refused.
    resp = await client.post(
        "/api/messages",
        json={"to": "+14155550101", "text": "Line 1\nLine 2\tGrüße 👋 你好", "from": "MyBrand"},
    )
    assert resp.status_code == 202, resp.text
    assert await _count(engine, messages) == 1


@pytest.mark.parametrize(
    "extra",
    [{"To": "1415\x000101"}, {"Status": "deliv\x00ered"}, {"Sequence": "\x00"}],
    ids=["To", "Status", "Sequence"],
)
async def test_signed_callback_with_nul_is_kept_raw_not_spooled(
    client: httpx.AsyncClient, engine: AsyncEngine, extra: dict[str, str]
) -> None:
    fields = callback_fields(new_uuid(), "delivered")
    fields.update(extra)
    target, body, headers = signed_form(fields)
    resp = await client.post(target, content=body, headers=headers)
    assert resp.status_code == 200
    assert resp.json() == {"result": "quarantined"}
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert await _count(engine, quarantine) == 1
    assert await _count(engine, messages) == 0


async def test_json_callback_with_a_lone_surrogate_is_refused_not_a_500(
    client: httpx.AsyncClient,
) -> None:
    headers = {
        "content-type": "application/json",
        "X-Plivo-Signature-V3": "AAAA",
        "X-Plivo-Signature-V3-Nonce": new_nonce(),
    }
    resp = await client.post(
        "/plivo/callback", content=b'{"MessageUUID": "\\ud800", "Status": "sent"}', headers=headers
    )
    assert resp.status_code == 403
    resp = await client.get(
        "/plivo/callback?" + urlencode({"MessageUUID": "x"}) + "&Text=%ED%A0%80", headers=headers
    )
    assert resp.status_code == 403


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/", 200),
        ("GET", "/static/app.js", 200),
        ("GET", "/health", 200),
        ("GET", "/ready", 200),
        ("GET", "/metrics", 200),
        ("GET", "/openapi.json", 200),
        ("GET", "/api/messages", 200),
        ("GET", "/api/stats", 200),
        ("GET", "/api/messages/999", 404),
        ("GET", "/no/such/route", 404),
        ("DELETE", "/api/messages", 415),  # a write without JSON: refused before routing
        ("POST", "/plivo/callback", 403),
        ("PUT", "/plivo/callback", 405),
    ],
)
async def test_every_response_says_nosniff(
    client: httpx.AsyncClient, method: str, path: str, expected: int
) -> None:
    resp = await client.request(method, path)
    assert resp.status_code == expected, resp.text
    assert resp.headers["x-content-type-options"] == "nosniff"


async def test_too_large_bodies_say_nosniff(client: httpx.AsyncClient) -> None:
    for path in ("/api/messages", "/plivo/callback"):
        resp = await client.post(path, content=b"x" * (65 * 1024))
        assert resp.status_code == 413
        assert resp.headers["x-content-type-options"] == "nosniff"
