"""API keys on /api/* (Bearer or X-API-Key); Plivo routes are authenticated by signature instead."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from asgi_lifespan import LifespanManager

from plivo_tracker.app import create_app
from plivo_tracker.config import Settings
from tests.conftest import callback_fields, new_uuid, signed_form


@pytest.fixture
async def keyed(
    make_settings: Callable[..., Settings], db_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(database_url=db_url, api_keys="key-one, key-two"))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


async def test_api_requires_a_key(keyed: httpx.AsyncClient) -> None:
    uuid = new_uuid()
    target, body, headers = signed_form(callback_fields(uuid, "sent"))
    assert (await keyed.post(target, content=body, headers=headers)).status_code == 200

    missing = await keyed.get(f"/api/messages/{uuid}")
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "unauthorized"
    wrong = await keyed.get(f"/api/messages/{uuid}", headers={"X-API-Key": "key-three"})
    assert wrong.status_code == 401
    bearer = await keyed.get(f"/api/messages/{uuid}", headers={"Authorization": "Bearer key-two"})
    assert bearer.status_code == 200
    header = await keyed.get(f"/api/messages/{uuid}", headers={"X-API-Key": "key-one"})
    assert header.json()["status"] == "sent"
    # Operations endpoints stay open for orchestrators.
    assert (await keyed.get("/health")).status_code == 200
