"""API keys on /api/* (Bearer or X-API-Key); Plivo routes are authenticated by signature instead."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from asgi_lifespan import LifespanManager

from plivo_tracker.app import create_app
from plivo_tracker.config import Settings
from tests.conftest import callback_fields, new_uuid, projecting_client, signed_form

KEY_ONE, KEY_TWO = "key-one-" + "1" * 30, "key-two-" + "2" * 30


@pytest.fixture
async def keyed(
    make_settings: Callable[..., Settings], db_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(database_url=db_url, api_keys=f"{KEY_ONE}, {KEY_TWO}"))
    async with LifespanManager(app):
        async with projecting_client(app) as c:
            yield c


async def test_api_requires_a_key(keyed: httpx.AsyncClient) -> None:
    uuid = new_uuid()
    target, body, headers = signed_form(callback_fields(uuid, "sent"))
    assert (await keyed.post(target, content=body, headers=headers)).status_code == 200

    missing = await keyed.get(f"/api/messages/{uuid}")
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "unauthorized"
    wrong = await keyed.get(f"/api/messages/{uuid}", headers={"X-API-Key": "key-three-" + "3" * 30})
    assert wrong.status_code == 401
    bearer = await keyed.get(
        f"/api/messages/{uuid}", headers={"Authorization": f"Bearer {KEY_TWO}"}
    )
    assert bearer.status_code == 200
    header = await keyed.get(f"/api/messages/{uuid}", headers={"X-API-Key": KEY_ONE})
    assert header.json()["status"] == "sent"
    # Operations endpoints stay open for orchestrators.
    assert (await keyed.get("/health")).status_code == 200
