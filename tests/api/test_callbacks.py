"""POST|GET /plivo/callback through the ASGI app, on real SQLite and real PostgreSQL."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from plivo_tracker.messages.models import callback_nonces, messages, quarantine, status_events
from plivo_tracker.plivo.signature import signed_headers
from tests.conftest import (
    BASE_URL,
    MAIN_TOKEN,
    OLD_TOKEN,
    TOKEN,
    callback_fields,
    new_nonce,
    new_uuid,
    signed_form,
)


async def _count(engine: AsyncEngine, table: object) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())  # type: ignore[arg-type]


async def _post(client: httpx.AsyncClient, fields: dict[str, str], **kw: str) -> httpx.Response:
    target, body, headers = signed_form(fields, **kw)
    return await client.post(target, content=body, headers=headers)


async def test_signed_callback_is_stored_and_applied(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    uuid = new_uuid()
    resp = await _post(client, callback_fields(uuid, "queued", Sequence="1"))
    assert resp.status_code == 200
    assert resp.json() == {"result": "stored"}
    resp = await _post(client, callback_fields(uuid, "delivered", Sequence="3"))
    assert resp.status_code == 200

    msg = (await client.get(f"/api/messages/{uuid}")).json()
    assert msg["status"] == "delivered"
    assert msg["origin"] == "callback"  # placeholder: no send of ours created it
    assert [e["status"] for e in msg["events"]] == ["queued", "delivered"]
    assert msg["events"][0]["raw"]["MessageUUID"] == uuid
    assert msg["events"][0]["headers"]["x-plivo-signature-v3-nonce"]
    by_id = (await client.get(f"/api/messages/{msg['id']}")).json()
    assert by_id["message_uuid"] == uuid


async def test_late_sent_never_overwrites_delivered(client: httpx.AsyncClient) -> None:
    uuid = new_uuid()
    for status, seq in (("delivered", "3"), ("sent", "2"), ("queued", "1")):
        assert (await _post(client, callback_fields(uuid, status, Sequence=seq))).status_code == 200
    msg = (await client.get(f"/api/messages/{uuid}")).json()
    assert msg["status"] == "delivered"
    assert [e["effect"] for e in msg["events"]] == ["applied", "stale", "stale"]
    assert msg["sent_at"] is not None
    assert msg["delivered_at"] is not None


async def test_unsigned_or_tampered_is_rejected_and_nothing_stored(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    fields = callback_fields(new_uuid(), "delivered")
    resp = await client.post(
        "/plivo/callback",
        content=urlencode(fields).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 403
    assert resp.json()["error"]["code"] == "invalid_signature"

    target, body, headers = signed_form(fields)
    tampered = body.replace(b"delivered", b"undelivered")
    assert (await client.post(target, content=tampered, headers=headers)).status_code == 403

    wrong_token = await _post(client, fields, token="not-our-token")
    assert wrong_token.status_code == 403
    # Signed for another host: the URL comes from PUBLIC_BASE_URL, not from the request.
    other_host = await _post(client, fields, base_url="https://evil.example.com")
    assert other_host.status_code == 403
    for table in (messages, status_events, callback_nonces, quarantine):
        assert await _count(engine, table) == 0


async def test_previous_and_main_tokens_accepted(client: httpx.AsyncClient) -> None:
    assert (
        await _post(client, callback_fields(new_uuid(), "sent"), token=OLD_TOKEN)
    ).status_code == 200
    # Ma- headers only: signed with the main-account token.
    fields = callback_fields(new_uuid(), "sent")
    nonce = new_nonce()
    form = {k: [v] for k, v in fields.items()}
    full = signed_headers("POST", BASE_URL + "/plivo/callback", form, TOKEN, nonce, MAIN_TOKEN)
    headers = {k: v for k, v in full.items() if "-Ma-" in k or k.endswith("Nonce")}
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    resp = await client.post("/plivo/callback", content=urlencode(fields).encode(), headers=headers)
    assert resp.status_code == 200


async def test_get_callback_with_query_fields(client: httpx.AsyncClient) -> None:
    uuid = new_uuid()
    fields = callback_fields(uuid, "undelivered", ErrorCode="80", Sequence="2")
    query = urlencode(fields)
    nonce = new_nonce()
    headers = signed_headers("GET", f"{BASE_URL}/plivo/callback?{query}", None, TOKEN, nonce)
    resp = await client.get(f"/plivo/callback?{query}", headers=headers)
    assert resp.status_code == 200
    msg = (await client.get(f"/api/messages/{uuid}")).json()
    assert msg["status"] == "undelivered"
    assert msg["error_code"] == "80"
    assert msg["error_meaning"].startswith("Destination temporarily unavailable")


async def test_json_and_multipart_bodies(client: httpx.AsyncClient) -> None:
    uuid = new_uuid()
    fields = callback_fields(uuid, "sent", Sequence="1")
    nonce = new_nonce()
    form = {k: [v] for k, v in fields.items()}
    headers = signed_headers("POST", BASE_URL + "/plivo/callback", form, TOKEN, nonce)
    resp = await client.post(
        "/plivo/callback",
        content=json.dumps(fields).encode(),
        headers={**headers, "Content-Type": "application/json"},
    )
    assert resp.status_code == 200

    fields = callback_fields(uuid, "delivered", Sequence="2")
    form = {k: [v] for k, v in fields.items()}
    headers = signed_headers("POST", BASE_URL + "/plivo/callback", form, TOKEN, new_nonce())
    # multipart/form-data (httpx switches to it when a file part is present; files are not fields)
    resp = await client.post(
        "/plivo/callback", data=fields, files={"attachment": ("a.txt", b"hi")}, headers=headers
    )
    assert resp.status_code == 200
    msg = (await client.get(f"/api/messages/{uuid}")).json()
    assert msg["status"] == "delivered"


async def test_non_ascii_values_verify(client: httpx.AsyncClient) -> None:
    uuid = new_uuid()
    resp = await _post(client, callback_fields(uuid, "sent", From="Grüße 👋"))
    assert resp.status_code == 200
    msg = (await client.get(f"/api/messages/{uuid}")).json()
    assert msg["from"] == "Grüße 👋"


async def test_replayed_nonce_and_duplicate_are_harmless(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    uuid = new_uuid()
    fields = callback_fields(uuid, "delivered", Sequence="2")
    target, body, headers = signed_form(fields)
    first = await client.post(target, content=body, headers=headers)
    again = await client.post(target, content=body, headers=headers)
    retry = await _post(client, fields)  # Plivo retry: same callback, new nonce
    assert [r.json()["result"] for r in (first, again, retry)] == ["stored", "replay", "duplicate"]
    assert await _count(engine, status_events) == 1


async def test_signed_but_unparseable_is_quarantined(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    resp = await _post(client, {"Status": "delivered", "Foo": "bar"})  # no MessageUUID
    assert resp.status_code == 200
    assert resp.json() == {"result": "quarantined"}
    resp = await _post(client, callback_fields(new_uuid(), "teleported"))
    assert resp.json() == {"result": "quarantined"}
    assert await _count(engine, quarantine) == 2
    assert await _count(engine, status_events) == 0


async def test_body_over_64_kib_gets_413(client: httpx.AsyncClient) -> None:
    resp = await client.post("/plivo/callback", content=b"x" * (64 * 1024 + 1))
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "payload_too_large"


async def test_unknown_message_is_404_json(client: httpx.AsyncClient) -> None:
    resp = await client.get("/api/messages/does-not-exist")
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "not_found"
    resp = await client.get("/api/messages/424242")
    assert resp.status_code == 404


async def test_ops_endpoints(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = await client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["schema"]["current"] == ready.json()["schema"]["head"]
    await _post(client, callback_fields(new_uuid(), "sent"))
    text = (await client.get("/metrics")).text
    assert 'plivo_tracker_callbacks_total{outcome="stored"}' in text
    assert (await client.get("/openapi.json")).json()["paths"]["/plivo/callback"]
