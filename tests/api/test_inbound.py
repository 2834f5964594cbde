"""POST|GET /plivo/inbound through the app, on real SQLite and real PostgreSQL: verified like a
status callback, journaled, applied as an inbound message, shown by the API, the live stream,
/api/stats and /metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import websockets
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from plivo_tracker.app import create_app
from plivo_tracker.config import Settings
from plivo_tracker.messages.models import (
    callback_nonces,
    journal,
    messages,
    quarantine,
    status_events,
)
from plivo_tracker.plivo.signature import signed_headers
from tests.api.test_live import _serving
from tests.conftest import (
    AUTH,
    BASE_URL,
    MAIN_TOKEN,
    TOKEN,
    callback_fields,
    new_nonce,
    new_uuid,
    projecting_client,
    signed_form,
)

PATH = "/plivo/inbound"
TABLES = (messages, status_events, callback_nonces, quarantine, journal)


def inbound_fields(uuid: str, text: str = "Hello there", **extra: str) -> dict[str, str]:
    """What Plivo posts to message_url for an SMS (plivo-protocol.md §2.7)."""
    fields = {
        "From": "447700900123",
        "To": "14155550100",
        "Type": "sms",
        "Text": text,
        "MessageUUID": uuid,
        "Units": "1",
        "TotalRate": "0.00000",
        "TotalAmount": "0.00000",
        "PowerpackUUID": "",
        "MessageIntent": "",
    }
    fields.update(extra)
    return fields


async def _post(client: httpx.AsyncClient, fields: dict[str, str], **kw: Any) -> httpx.Response:
    target, body, headers = signed_form(fields, path=PATH, **kw)
    return await client.post(target, content=body, headers=headers)


async def _count(engine: AsyncEngine, table: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_signed_inbound_is_stored_and_shown(client: httpx.AsyncClient) -> None:
    uuid = new_uuid()
    resp = await _post(client, inbound_fields(uuid, PowerpackUUID="pp-1", MessageIntent=""))
    assert resp.status_code == 200
    assert resp.json() == {"result": "stored"}

    msg = (await client.get(f"/api/messages/{uuid}")).json()
    assert msg["direction"] == "inbound"
    assert msg["origin"] == "inbound"
    assert msg["status"] == "received"
    assert msg["from"] == "+447700900123"  # E.164, as our own sends store numbers
    assert msg["to"] == "+14155550100"
    assert msg["text"] == "Hello there"
    assert msg["type"] == "sms"
    assert msg["units"] == 1
    assert msg["total_amount"] == "0.00000"
    assert msg["media_urls"] is None
    assert msg["inbound"] == {
        "powerpack_uuid": "pp-1",
        "message_intent": None,
        "media_count": None,
        "media": [],
    }
    assert msg["settled"] is True
    assert msg["settled_reason"] == "received"
    [event] = msg["events"]
    assert event["status"] == "received"
    assert event["source"] == "inbound"
    assert event["raw"] == inbound_fields(uuid, PowerpackUUID="pp-1")  # every field as received
    assert event["headers"]["x-plivo-signature-v3-nonce"]
    assert (await client.get(f"/api/messages/{msg['id']}")).json()["message_uuid"] == uuid


async def test_direction_filter(client: httpx.AsyncClient) -> None:
    theirs = new_uuid()
    ours = new_uuid()
    assert (await _post(client, inbound_fields(theirs))).status_code == 200
    target, body, headers = signed_form(callback_fields(ours, "delivered", Sequence="3"))
    assert (await client.post(target, content=body, headers=headers)).status_code == 200

    def uuids(resp: httpx.Response) -> list[str]:
        assert resp.status_code == 200, resp.text
        return [m["message_uuid"] for m in resp.json()["messages"]]

    assert uuids(await client.get("/api/messages?direction=inbound")) == [theirs]
    assert uuids(await client.get("/api/messages?direction=outbound")) == [ours]
    assert set(uuids(await client.get("/api/messages"))) == {theirs, ours}
    assert uuids(await client.get("/api/messages?direction=inbound&status=received")) == [theirs]
    assert uuids(await client.get("/api/messages?from=447700900123")) == [theirs]
    bad = await client.get("/api/messages?direction=sideways")
    assert bad.status_code == 422
    assert "error" in bad.json()


async def test_number_filter_is_the_other_party(client: httpx.AsyncClient) -> None:
    """`number`: the recipient of ours, the sender of a received one (the dashboard's Number
    column); our own number, which every message carries on one side, matches none of them."""
    theirs = new_uuid()
    assert (await _post(client, inbound_fields(theirs, From="447911123456"))).status_code == 200
    sent = await client.post(
        "/api/messages",
        json={"to": ["+447911123456", "+447911123999"], "text": "hi", "from": "+14155550100"},
    )
    assert sent.status_code == 202, sent.text
    reply, other = (m["id"] for m in sent.json()["messages"])

    async def ids(number: str) -> list[int]:
        resp = await client.get("/api/messages", params={"number": number})
        assert resp.status_code == 200, resp.text
        return [m["id"] for m in resp.json()["messages"]]

    received = (await client.get(f"/api/messages/{theirs}")).json()["id"]
    assert await ids("+44 7911 123456") == [reply, received]  # both ways, newest first
    assert await ids("447911123456") == [reply, received]
    assert await ids("+447911123999") == [other]
    assert await ids("+14155550100") == []  # ours: the sender of both sends, the inbound's `to`
    bad = await client.get("/api/messages", params={"number": "abc"})
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_parameter"
    assert bad.json()["error"]["parameter"] == "number"


async def test_forged_and_tampered_are_refused_and_nothing_stored(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    fields = inbound_fields(new_uuid(), "STOP")
    unsigned = await client.post(
        PATH,
        content=urlencode(fields).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert unsigned.status_code == 403
    assert unsigned.json()["error"]["code"] == "invalid_signature"
    target, body, headers = signed_form(fields, path=PATH)
    tampered = body.replace(b"STOP", b"START")
    assert (await client.post(target, content=tampered, headers=headers)).status_code == 403
    assert (await _post(client, fields, token="not-our-token")).status_code == 403
    # Signed for the callback route: the URL is part of the signature.
    target, body, headers = signed_form(fields, path="/plivo/callback")
    assert (await client.post(PATH, content=body, headers=headers)).status_code == 403
    assert (await _post(client, fields, base_url="https://evil.example.com")).status_code == 403
    for table in TABLES:
        assert await _count(engine, table) == 0


async def test_duplicates_and_replays_are_harmless(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    uuid = new_uuid()
    fields = inbound_fields(uuid, "once")
    nonce = new_nonce()
    assert (await _post(client, fields, nonce=nonce)).json() == {"result": "stored"}
    # The same signed request again (same nonce): a replay.
    assert (await _post(client, fields, nonce=nonce)).json() == {"result": "replay"}
    # Plivo's retry: the same message under a new nonce.
    assert (await _post(client, fields)).json() == {"result": "duplicate"}
    assert await _count(engine, messages) == 1
    assert await _count(engine, status_events) == 1
    assert await _count(engine, journal) == 1
    msg = (await client.get(f"/api/messages/{uuid}")).json()
    assert len(msg["events"]) == 1


async def test_get_method_with_the_fields_in_the_query(client: httpx.AsyncClient) -> None:
    uuid = new_uuid()
    query = urlencode(inbound_fields(uuid, "by GET ✓"))
    headers = signed_headers("GET", f"{BASE_URL}{PATH}?{query}", None, TOKEN, new_nonce())
    resp = await client.get(f"{PATH}?{query}", headers=headers)
    assert resp.status_code == 200, resp.text
    msg = (await client.get(f"/api/messages/{uuid}")).json()
    assert msg["text"] == "by GET ✓"
    assert msg["events"][0]["raw"]["MessageUUID"] == uuid


async def test_mms_media_fields(client: httpx.AsyncClient) -> None:
    uuid = new_uuid()
    fields = inbound_fields(
        uuid,
        "",
        Type="mms",
        Body="Look at this",
        MediaCount="2",
        Media1="https://media.example.com/a.jpg",
        MediaContentType1="image/jpeg",
        Media2="https://media.example.com/b.png",
        MediaContentType2="image/png",
    )
    del fields["Text"]
    assert (await _post(client, fields)).status_code == 200
    msg = (await client.get(f"/api/messages/{uuid}")).json()
    assert msg["type"] == "mms"
    assert msg["text"] == "Look at this"
    assert msg["media_urls"] == [
        "https://media.example.com/a.jpg",
        "https://media.example.com/b.png",
    ]
    assert msg["inbound"]["media_count"] == 2
    assert msg["inbound"]["media"] == [
        {"url": "https://media.example.com/a.jpg", "content_type": "image/jpeg"},
        {"url": "https://media.example.com/b.png", "content_type": "image/png"},
    ]
    # A support article numbers them from 0: accepted too.
    zero = new_uuid()
    fields = inbound_fields(zero, "", Type="mms", Media0="https://m.example.com/0.gif")
    assert (await _post(client, fields)).status_code == 200
    msg = (await client.get(f"/api/messages/{zero}")).json()
    assert msg["media_urls"] == ["https://m.example.com/0.gif"]
    assert msg["text"] == ""


async def test_signed_but_unreadable_is_quarantined(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    fields = inbound_fields(new_uuid())
    del fields["From"]
    resp = await _post(client, fields)
    assert resp.status_code == 200
    assert resp.json() == {"result": "quarantined"}
    assert await _count(engine, messages) == 0
    async with engine.connect() as conn:
        row = (await conn.execute(select(quarantine))).mappings().one()
    assert row["path"] == PATH
    assert "From missing" in row["reason"]
    assert row["body"] == urlencode(fields).encode()  # kept raw


async def test_inbound_counts_in_stats_and_metrics(client: httpx.AsyncClient) -> None:
    before = (await client.get("/metrics")).text
    for _ in range(3):
        assert (await _post(client, inbound_fields(new_uuid()))).status_code == 200
    target, body, headers = signed_form(callback_fields(new_uuid(), "delivered"))
    assert (await client.post(target, content=body, headers=headers)).status_code == 200
    stats = (await client.get("/api/stats?window=1h")).json()
    assert stats["inbound"] == {"total": 3}
    assert stats["by_status"]["received"] == 3
    assert stats["total"] == 1  # the delivery statistics count our messages only
    assert sum(p["inbound"] for p in stats["series"]["points"]) == 3
    assert sum(p["total"] for p in stats["series"]["points"]) == 1
    after = (await client.get("/metrics")).text

    def stored(text: str) -> float:
        prefix = 'plivo_tracker_inbound_messages_total{outcome="stored"} '
        lines = [line for line in text.splitlines() if line.startswith(prefix)]
        return float(lines[0].split()[-1]) if lines else 0.0

    assert stored(after) - stored(before) == 3


# ---- the SDK's own worked example: non-ASCII text, byte for byte ------------------------------

EXAMPLE3_BODY = (
    b"From=447700900123&To=14155550100&Type=sms&Text=Gr%C3%BC%C3%9Fe+%F0%9F%91%8B"
    b"&MessageUUID=5c0f7d1e-6c1e-11ef-a1b2-0242ac120004&Units=1"
)
EXAMPLE3_HEADERS = {
    "X-Plivo-Signature-V3": "djuC4EiZqM7wpmOvTqaSnwOTK8e/kvMbaXYfRom8320=,"
    "1gEIfAn1cuHfFDn5pnpY1p6oVFr3f5NoMHmUmn+A+6E=",
    "X-Plivo-Signature-V3-Nonce": "19283746501928374650",
    "Content-Type": "application/x-www-form-urlencoded",
}


@pytest.fixture
async def example_client(
    make_settings: Callable[..., Settings], db_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with plivo-protocol.md §3.8's tokens and URL."""
    settings = make_settings(
        database_url=db_url,
        public_base_url="https://hooks.example.com",
        plivo_auth_token="sub-account-token-EXAMPLE",
        plivo_main_auth_token="main-account-token-EXAMPLE",
        plivo_auth_tokens_previous="retired-token-EXAMPLE",
    )
    app = create_app(settings, migrate=False, dispatch=False)
    async with LifespanManager(app), projecting_client(app, headers=AUTH) as c:
        yield c


async def test_example3_non_ascii_text_survives_byte_for_byte(
    example_client: httpx.AsyncClient,
) -> None:
    from plivo.utils import validate_v3_signature

    # The oracle: the official SDK accepts this request as signed.
    params = {
        "From": "447700900123",
        "To": "14155550100",
        "Type": "sms",
        "Text": "Grüße 👋",
        "MessageUUID": "5c0f7d1e-6c1e-11ef-a1b2-0242ac120004",
        "Units": "1",
    }
    assert validate_v3_signature(
        "POST",
        "https://hooks.example.com/plivo/inbound",
        EXAMPLE3_HEADERS["X-Plivo-Signature-V3-Nonce"],
        "sub-account-token-EXAMPLE",
        EXAMPLE3_HEADERS["X-Plivo-Signature-V3"].split(",")[1],
        dict(params),
    )
    resp = await example_client.post(PATH, content=EXAMPLE3_BODY, headers=EXAMPLE3_HEADERS)
    assert resp.status_code == 200, resp.text
    msg = (await example_client.get("/api/messages/5c0f7d1e-6c1e-11ef-a1b2-0242ac120004")).json()
    assert msg["text"] == "Grüße 👋"
    assert msg["text"].encode("utf-8") == "Grüße 👋".encode()
    assert msg["events"][0]["raw"] == params
    assert msg["events"][0]["signature_scheme"] == "v3"
    # One byte changed in the text: refused.
    forged = EXAMPLE3_BODY.replace(b"%9F%91%8B", b"%9F%91%8C")
    headers = {**EXAMPLE3_HEADERS, "X-Plivo-Signature-V3-Nonce": "19283746501928374651"}
    assert (await example_client.post(PATH, content=forged, headers=headers)).status_code == 403


async def test_main_account_signature_alone(client: httpx.AsyncClient) -> None:
    """Integrators saw only Ma-V3 verify on live inbound SMS (§3.1): accepted on its own."""
    uuid = new_uuid()
    fields = inbound_fields(uuid, "Ma only")
    form = {k: [v] for k, v in fields.items()}
    full = signed_headers("POST", BASE_URL + PATH, form, "wrong-token", new_nonce(), MAIN_TOKEN)
    resp = await client.post(PATH, content=urlencode(fields).encode(), headers=full)
    assert resp.status_code == 200, resp.text  # the plain V3 is wrong, Ma-V3 right
    assert (await client.get(f"/api/messages/{uuid}")).json()["text"] == "Ma only"


async def test_store_message_text_false_keeps_no_text(
    make_settings: Callable[..., Settings], db_url: str
) -> None:
    app = create_app(
        make_settings(database_url=db_url, store_message_text=False),
        migrate=False,
        dispatch=False,
    )
    uuid = new_uuid()
    fields = inbound_fields(uuid, "secret", Media1="https://m.example.com/x.jpg", Type="mms")
    async with LifespanManager(app), projecting_client(app, headers=AUTH) as c:
        assert (await _post(c, fields)).status_code == 200
        msg = (await c.get(f"/api/messages/{uuid}")).json()
    assert msg["text"] is None
    assert msg["media_urls"] is None
    assert msg["content_erased_at"] is not None
    assert "Text" not in msg["events"][0]["raw"]
    assert "Media1" not in msg["events"][0]["raw"]
    assert msg["events"][0]["raw"]["From"] == "447700900123"


# ---- the live stream --------------------------------------------------------------------------


async def _next_frames(ws: Any, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        while len(out) < n:
            frame = json.loads(await ws.recv())
            if frame["type"] in ("status", "message"):
                out.append(frame)
    return out


async def test_ws_message_frames_share_the_id_sequence_and_resume(
    make_settings: Callable[..., Settings], db_url: str
) -> None:
    async with _serving(make_settings(database_url=db_url)) as host:
        async with httpx.AsyncClient(base_url=f"http://{host}", headers=AUTH) as http:
            async with websockets.connect(f"ws://{host}/ws", additional_headers=AUTH) as ws:
                async with asyncio.timeout(10):
                    while json.loads(await ws.recv())["type"] != "ready":
                        pass
                ours, theirs = new_uuid(), new_uuid()
                target, body, headers = signed_form(callback_fields(ours, "queued", Sequence="1"))
                assert (await http.post(target, content=body, headers=headers)).status_code == 200
                fields = inbound_fields(theirs, "Grüße 👋", Media1="https://m.example.com/a.jpg")
                assert (await _post(http, fields)).status_code == 200
                target, body, headers = signed_form(callback_fields(ours, "sent", Sequence="2"))
                assert (await http.post(target, content=body, headers=headers)).status_code == 200
                live = await _next_frames(ws, 3)
            assert [f["type"] for f in live] == ["status", "message", "status"]
            ids = [f["id"] for f in live]
            assert ids == sorted(ids)
            message = live[1]
            msg = (await http.get(f"/api/messages/{theirs}")).json()
            assert message == {
                "id": msg["events"][0]["id"],
                "type": "message",
                "message_id": msg["id"],
                "message_uuid": theirs,
                "direction": "inbound",
                "from": "+447700900123",
                "to": "+14155550100",
                "text": "Grüße 👋",
                "media_urls": ["https://m.example.com/a.jpg"],
                "status": "received",
                "at": message["at"],
            }
            assert message["at"].endswith("Z")
            # ?since= takes either kind's id: resume after the status frame, then the message's.
            for since, expected in ((ids[0], ids[1:]), (ids[1], ids[2:])):
                url = f"ws://{host}/ws?since={since}"
                async with websockets.connect(url, additional_headers=AUTH) as ws:
                    replay = await _next_frames(ws, len(expected))
                assert [f["id"] for f in replay] == expected
            # The status filter knows "received".
            url = f"ws://{host}/ws?since=0&status=received"
            async with websockets.connect(url, additional_headers=AUTH) as ws:
                [only] = await _next_frames(ws, 1)
            assert only == message
