"""Callback signature hardening through the ASGI app, on real SQLite and real PostgreSQL:
stripped-scheme replays, PLIVO_SIGNATURE=v3, previous main-account tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from plivo_tracker.app import create_app
from plivo_tracker.config import Settings
from plivo_tracker.messages.models import callback_nonces, messages, status_events
from plivo_tracker.plivo.signature import sign_v2, sign_v3
from tests.conftest import (
    BASE_URL,
    MAIN_TOKEN,
    TOKEN,
    callback_fields,
    new_nonce,
    new_uuid,
    projecting_client,
)

URL = BASE_URL + "/plivo/callback"
FORM_TYPE = {"Content-Type": "application/x-www-form-urlencoded"}
OLD_MAIN_TOKEN = "retired-main-token-TEST"


def _headers(
    fields: dict[str, str],
    *,
    v2_nonce: str | None = None,
    v3_nonce: str | None = None,
    token: str | None = TOKEN,
    main_token: str | None = None,
) -> dict[str, str]:
    """Signature headers for a POST of `fields`: V2 with `v2_nonce`, V3 with `v3_nonce`,
    plain with `token`, Ma- with `main_token`."""
    form = {k: [v] for k, v in fields.items()}
    headers = dict(FORM_TYPE)
    if v2_nonce is not None:
        headers["X-Plivo-Signature-V2-Nonce"] = v2_nonce
        if token is not None:
            headers["X-Plivo-Signature-V2"] = sign_v2(URL, v2_nonce, token)
        if main_token is not None:
            headers["X-Plivo-Signature-Ma-V2"] = sign_v2(URL, v2_nonce, main_token)
    if v3_nonce is not None:
        headers["X-Plivo-Signature-V3-Nonce"] = v3_nonce
        if token is not None:
            headers["X-Plivo-Signature-V3"] = sign_v3("POST", URL, v3_nonce, token, form)
        if main_token is not None:
            headers["X-Plivo-Signature-Ma-V3"] = sign_v3("POST", URL, v3_nonce, main_token, form)
    return headers


async def _post(
    client: httpx.AsyncClient, fields: dict[str, str], headers: dict[str, str]
) -> httpx.Response:
    return await client.post("/plivo/callback", content=urlencode(fields).encode(), headers=headers)


async def _count(engine: AsyncEngine, table: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def _snapshot(engine: AsyncEngine) -> tuple[int, int, int, list[tuple[Any, ...]]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(messages.c.message_uuid, messages.c.status))).all()
    return (
        await _count(engine, status_events),
        await _count(engine, callback_nonces),
        await _count(engine, messages),
        sorted(tuple(r) for r in rows),
    )


@pytest.fixture
def app_with(make_settings: Callable[..., Settings], db_url: str) -> Callable[..., Any]:
    """An app (as the `app`/`client` fixtures build it) with extra settings."""

    def _make(**overrides: Any) -> Any:
        settings = make_settings(database_url=db_url, **overrides)
        return create_app(settings, migrate=False, dispatch=False)

    return _make


async def _client_for(application: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(application):
        async with projecting_client(application) as c:
            yield c


@pytest.fixture
async def v3_client(app_with: Callable[..., Any]) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client_for(app_with(plivo_signature="v3")):
        yield c


@pytest.fixture
async def rotating_client(app_with: Callable[..., Any]) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client_for(app_with(plivo_main_auth_tokens_previous=OLD_MAIN_TOKEN)):
        yield c


# --- every nonce recorded --------------------------------------------------------------------


async def test_stripping_one_signature_family_does_not_replay(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    uuid = new_uuid()
    fields = callback_fields(uuid, "sent", Sequence="2")
    n2, n3 = new_nonce(), new_nonce()
    both = _headers(fields, v2_nonce=n2, v3_nonce=n3)
    first = await _post(client, fields, both)
    assert first.json() == {"result": "stored"}
    before = await _snapshot(engine)
    assert before[:2] == (1, 2)  # one event; both nonces recorded

    v2_only = {k: v for k, v in both.items() if "-V3" not in k}
    v3_only = {k: v for k, v in both.items() if "-V2" not in k}
    assert sorted(k for k in v2_only if k.startswith("X-")) == [
        "X-Plivo-Signature-V2",
        "X-Plivo-Signature-V2-Nonce",
    ]
    assert sorted(k for k in v3_only if k.startswith("X-")) == [
        "X-Plivo-Signature-V3",
        "X-Plivo-Signature-V3-Nonce",
    ]
    for headers in (v2_only, v3_only):
        resp = await _post(client, fields, headers)
        assert resp.status_code == 200
        assert resp.json() == {"result": "replay"}
    # V2 does not cover the body: the captured V2 headers over a forged body replay nothing.
    forged = callback_fields(uuid, "delivered", Sequence="3")
    resp = await _post(client, forged, v2_only)
    assert resp.status_code == 200
    assert resp.json() == {"result": "replay"}
    assert await _snapshot(engine) == before
    msg = (await client.get(f"/api/messages/{uuid}")).json()
    assert msg["status"] == "sent"


async def test_any_nonce_seen_before_is_a_replay(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    fields = callback_fields(new_uuid(), "queued", Sequence="1")
    n2, n3 = new_nonce(), new_nonce()
    v3_first = await _post(client, fields, _headers(fields, v3_nonce=n3))
    assert v3_first.json() == {"result": "stored"}
    # The same V3 signature with a V2 pair added under a new nonce: still a replay.
    again = await _post(client, fields, _headers(fields, v2_nonce=n2, v3_nonce=n3))
    assert again.json() == {"result": "replay"}
    assert await _count(engine, status_events) == 1


# --- PLIVO_SIGNATURE=v3 ----------------------------------------------------------------------


async def test_v3_only_refuses_v2_and_accepts_v3(
    v3_client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    fields = callback_fields(new_uuid(), "sent")
    for headers in (
        _headers(fields, v2_nonce=new_nonce()),
        _headers(fields, v2_nonce=new_nonce(), token=None, main_token=MAIN_TOKEN),
    ):
        resp = await _post(v3_client, fields, headers)
        assert resp.status_code == 403
        assert resp.json()["error"]["code"] == "invalid_signature"
    assert await _count(engine, callback_nonces) == 0
    assert await _count(engine, messages) == 0

    resp = await _post(v3_client, fields, _headers(fields, v3_nonce=new_nonce()))
    assert resp.status_code == 200
    assert resp.json() == {"result": "stored"}
    other = callback_fields(new_uuid(), "sent")
    ma = _headers(other, v3_nonce=new_nonce(), token=None, main_token=MAIN_TOKEN)
    assert (await _post(v3_client, other, ma)).json() == {"result": "stored"}


async def test_default_still_accepts_v2_only(client: httpx.AsyncClient) -> None:
    fields = callback_fields(new_uuid(), "sent")
    resp = await _post(client, fields, _headers(fields, v2_nonce=new_nonce()))
    assert resp.status_code == 200
    assert resp.json() == {"result": "stored"}


# --- previous main-account tokens --------------------------------------------------------------


@pytest.mark.parametrize("family", ["v2", "v3"])
async def test_ma_header_with_previous_main_token_accepted(
    rotating_client: httpx.AsyncClient, engine: AsyncEngine, family: str
) -> None:
    fields = callback_fields(new_uuid(), "sent")

    async def post(main_token: str) -> int:
        nonce = {f"{family}_nonce": new_nonce()}
        headers = _headers(fields, token=None, main_token=main_token, **nonce)
        return (await _post(rotating_client, fields, headers)).status_code

    assert await post(OLD_MAIN_TOKEN) == 200
    assert await post(MAIN_TOKEN) == 200
    assert await post("unknown-main-token") == 403
    assert await _count(engine, status_events) == 1  # the second was a duplicate


async def test_previous_main_token_refused_without_the_setting(client: httpx.AsyncClient) -> None:
    fields = callback_fields(new_uuid(), "sent")
    headers = _headers(fields, v3_nonce=new_nonce(), token=None, main_token=OLD_MAIN_TOKEN)
    assert (await _post(client, fields, headers)).status_code == 403
