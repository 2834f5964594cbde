"""GET /api/conversations and GET /api/conversations/{number} through the ASGI app on real
SQLite and PostgreSQL: our messages sent through POST /api/messages and the simulator (signed
callbacks to their final status), received messages posted by the in-process simulator to
/plivo/inbound, signed as Plivo signs them (or, without the simulator, a signed POST of
Plivo's fields)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from plivo_tracker.conversations import repository as conv_repo
from plivo_tracker.messages.models import messages
from plivo_tracker.simulator.scenario import ScenarioConfig
from tests.api.test_inbound import _post, inbound_fields
from tests.conftest import ServiceOpener, new_uuid, until_projected

OURS = "+14155550100"  # the simulator's number (PLIVO_SRC in simulator mode)
ALICE, BOB, CAROL, DAVE = "+14155550101", "+14155550102", "+14155550103", "+14155550104"
FINAL = {"delivered", "undelivered", "failed"}


@pytest.fixture
async def service(simulator_service: ServiceOpener) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    # Every send is delivered, quickly: the statuses below are the simulator's, not guessed.
    scenario = ScenarioConfig(speed=200, fail_rate=0.0, undelivered_rate=0.0, dup_rate=0.0)
    async with simulator_service(scenario) as opened:
        yield opened


async def send(client: httpx.AsyncClient, to: str, text: str, **extra: Any) -> int:
    resp = await client.post("/api/messages", json={"to": [to], "text": text, **extra})
    assert resp.status_code == 202, resp.text
    [created] = resp.json()["messages"]
    return int(created["id"])


async def receive(
    service: tuple[httpx.AsyncClient, Any],
    sender: str,
    text: str | None,
    media_urls: tuple[str, ...] = (),
) -> int:
    """A message from `sender` to our number: the app's simulator posts it, signed, to
    /plivo/inbound (as Plivo posts to the Application's message_url); its id once applied."""
    client, app = service
    mdr, status = await app.state.sending.simulator.receive(
        sender.lstrip("+"), OURS.lstrip("+"), text, media_urls
    )
    assert status == 200
    await until_projected(app)  # a 200 means journaled; the message follows
    resp = await client.get(f"/api/messages/{mdr['message_uuid']}")
    assert resp.status_code == 200, resp.text
    assert resp.json()["direction"] == "inbound"
    return int(resp.json()["id"])


async def until_final(client: httpx.AsyncClient, ids: list[int]) -> dict[int, str]:
    statuses: dict[int, str] = {}
    async with asyncio.timeout(20):
        while True:
            statuses = {i: (await client.get(f"/api/messages/{i}")).json()["status"] for i in ids}
            if all(s in FINAL for s in statuses.values()):
                return statuses
            await asyncio.sleep(0.05)


async def opt_outs_recorded(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        return bool(await conn.run_sync(lambda c: inspect(c).has_table("opt_outs")))


async def test_one_conversation_per_number_newest_first_with_cursor_pages(
    service: tuple[httpx.AsyncClient, Any], engine: AsyncEngine
) -> None:
    client, _ = service
    a1 = await send(client, ALICE, "Hi Alice")
    b1 = await send(client, BOB, "Hi Bob")
    b2 = await receive(service, BOB, "Hi back")
    c1 = await receive(service, CAROL, "Who is this?")
    a2 = await send(client, ALICE, "Still there?")
    await until_final(client, [a1, b1, a2])

    resp = await client.get("/api/conversations")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["next_cursor"] is None
    items = body["conversations"]
    assert [(c["number"], c["last_message"]["id"]) for c in items] == [
        (ALICE, a2),
        (CAROL, c1),
        (BOB, b2),
    ]
    alice, carol, bob = items
    assert alice["our_number"].lstrip("+") == OURS.lstrip("+")
    assert carol["our_number"] == OURS
    # The message list's summary, plus media URLs.
    listed = (await client.get("/api/messages", params={"ids": str(a2)})).json()["messages"][0]
    assert {k: v for k, v in alice["last_message"].items() if k != "media_urls"} == {
        k: v for k, v in listed.items() if k != "media_urls"
    }
    assert alice["last_message"]["direction"] == "outbound"
    assert alice["last_message"]["status"] == "delivered"
    assert bob["last_message"]["direction"] == "inbound"
    assert bob["last_message"]["status"] == "received"
    assert bob["last_message"]["text"] == "Hi back"
    assert bob["last_message"]["from"] == BOB
    # Opt-out state: a boolean where opt-outs are recorded, null (unknown) where they are not.
    expected = False if await opt_outs_recorded(engine) else None
    assert [c["opted_out"] for c in items] == [expected] * 3

    # Cursor pages of one: the same three, in the same order, each once.
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/conversations", params=params)).json()
        seen += [c["number"] for c in page["conversations"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [ALICE, CAROL, BOB]

    # A new message moves its conversation to the top.
    b3 = await receive(service, BOB, "Hello?")
    top = (await client.get("/api/conversations", params={"limit": 1})).json()
    assert [(c["number"], c["last_message"]["id"]) for c in top["conversations"]] == [(BOB, b3)]


async def test_a_thread_holds_both_directions_in_order_with_statuses_and_media(
    service: tuple[httpx.AsyncClient, Any],
) -> None:
    client, _ = service
    ids = [await send(client, ALICE, "Your table is ready")]
    ids.append(await receive(service, ALICE, "On my way 🚗"))
    ids.append(
        await receive(
            service,
            ALICE,
            "Look",
            media_urls=("https://media.example.com/a.jpg", "https://media.example.com/b.png"),
        )
    )
    ids.append(
        await send(
            client,
            ALICE,
            "Here is the menu",
            type="mms",
            media_urls=["https://cdn.example.com/menu.pdf"],
        )
    )
    other = await send(client, BOB, "Not Alice's")
    statuses = await until_final(client, [ids[0], ids[3], other])

    resp = await client.get(f"/api/conversations/{ALICE}")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["number"] == ALICE
    assert body["next_cursor"] is None
    thread = body["messages"]
    assert [m["id"] for m in thread] == ids  # oldest first, Bob's message not in it
    assert [m["direction"] for m in thread] == ["outbound", "inbound", "inbound", "outbound"]
    assert [m["status"] for m in thread] == [
        statuses[ids[0]],
        "received",
        "received",
        statuses[ids[3]],
    ]
    assert thread[1]["text"] == "On my way 🚗"
    assert thread[2]["media_urls"] == [
        "https://media.example.com/a.jpg",
        "https://media.example.com/b.png",
    ]
    assert thread[2]["type"] == "mms"
    assert thread[3]["media_urls"] == ["https://cdn.example.com/menu.pdf"]
    assert thread[0]["media_urls"] == []

    # Cursor pages: the newest page first, each page oldest first; together, the whole thread.
    pages: list[list[int]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(f"/api/conversations/{ALICE}", params=params)).json()
        pages.append([m["id"] for m in page["messages"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [ids[1:], ids[:1]]


@pytest.mark.parametrize(
    "spelling", ["%2B14155550101", "+14155550101", "14155550101", "%2B1%20415%20555%200101"]
)
async def test_a_number_is_found_by_any_e164_spelling(
    service: tuple[httpx.AsyncClient, Any], spelling: str
) -> None:
    client, _ = service
    if spelling.startswith("%2B1%20"):
        resp = await client.get(f"/api/conversations/{spelling}")
        assert resp.status_code == 422  # spaces are not E.164
        return
    received = await receive(service, ALICE, "hi")
    resp = await client.get(f"/api/conversations/{spelling}")
    assert resp.status_code == 200, resp.text
    assert resp.json()["number"] == ALICE
    assert [m["id"] for m in resp.json()["messages"]] == [received]


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/api/conversations/not-a-number", "number"),
        ("/api/conversations/+1415555", "number"),  # too short for its country
        ("/api/conversations/+", "number"),
        ("/api/conversations/%2B%C2%B2", "number"),  # "²" is a digit to str.isdigit
        ("/api/conversations/+99912345678", "number"),  # no such country code
        (f"/api/conversations/+1{'4' * 40}", None),  # over 32 characters
        ("/api/conversations?limit=0", None),
        ("/api/conversations?limit=201", None),
        ("/api/conversations?cursor=abc", None),
        ("/api/conversations?cursor=9999999999999999999", None),
        ("/api/conversations/+14155550101?cursor=-1", None),
    ],
)
async def test_bad_numbers_and_parameters_are_422_in_the_error_envelope(
    client: httpx.AsyncClient, path: str, parameter: str | None
) -> None:
    resp = await client.get(path)
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] in {"invalid_parameter", "validation_error"}
    assert error["message"]
    if parameter is not None:
        assert error["parameter"] == parameter
        assert "not-a-number" not in error["message"]  # broken input is never echoed


async def test_an_empty_thread_and_an_empty_list(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/conversations")).json() == {
        "conversations": [],
        "next_cursor": None,
    }
    body = (await client.get(f"/api/conversations/{DAVE}")).json()
    assert body["number"] == DAVE
    assert body["messages"] == []
    assert body["next_cursor"] is None


async def test_messages_known_only_from_callbacks_are_in_no_thread(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """A placeholder (a callback for a UUID no send of ours has claimed yet) and a reservation
    row are not conversations; an inbound message next to them is."""
    now = datetime.now(UTC)
    base = {"status": "sent", "has_conflict": False, "created_at": now, "updated_at": now}
    async with engine.begin() as conn:
        await conn.execute(
            messages.insert(),
            [
                {**base, "origin": "callback", "to_number": "14155550101", "message_uuid": "u1"},
                {**base, "origin": "claim", "to_number": ALICE, "message_uuid": "u2"},
            ],
        )
    signed = await _post(client, inbound_fields(new_uuid(), "only me", From=BOB.lstrip("+")))
    assert signed.status_code == 200, signed.text
    items = (await client.get("/api/conversations")).json()["conversations"]
    assert [c["number"] for c in items] == [BOB]
    assert (await client.get(f"/api/conversations/{ALICE}")).json()["messages"] == []


def _plan_tables(node: Any) -> list[dict[str, Any]]:
    """Every "table" entry of a MariaDB JSON plan, however deep."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if isinstance(node.get("table"), dict):
            found.append(node["table"])
        for value in node.values():
            found += _plan_tables(value)
    elif isinstance(node, list):
        for value in node:
            found += _plan_tables(value)
    return found


async def test_the_queries_walk_indexes_not_the_table(engine: AsyncEngine, db_url: str) -> None:
    """The plans of both queries use the (number, id) indexes of migration 0004 on this
    database: no new index is needed (timings at 200,000 messages: CHANGELOG)."""
    now = datetime.now(UTC)
    rows = []
    for i in range(6000):
        remote = f"+1415555{i % 3000:04d}"
        inbound = i % 5 == 0  # a reply for every four of ours
        rows.append(
            {
                "origin": "inbound" if inbound else "api",
                "direction": "inbound" if inbound else "outbound",
                "status": "received" if inbound else "delivered",
                "to_number": OURS if inbound else remote,
                "from_number": remote if inbound else OURS,
                "has_conflict": False,
                "created_at": now,
                "updated_at": now,
            }
        )
    async with engine.begin() as conn:
        await conn.execute(messages.insert(), rows)
        await conn.execute(
            text("ANALYZE TABLE messages" if db_url.startswith("mysql") else "ANALYZE")
        )
    async with engine.connect() as conn:
        plans = await conv_repo.explain(conn, "+14155550007")
    for name, plan in plans.items():
        lowered = plan.lower()
        if db_url.startswith("sqlite"):
            # The outer walk of the list is the rowid in reverse (no sort of the table).
            assert "scan newer" not in lowered, (name, plan)
            assert "ix_messages_to_number_id" in lowered, (name, plan)
            if name == "thread":
                assert "ix_messages_from_number_id" in lowered, (name, plan)
                assert "scan messages" not in lowered, (name, plan)
        elif db_url.startswith("mysql"):
            # No full scan of a stored table (a small derived one of the union is fine).
            scans = [t for t in _plan_tables(json.loads(plan)) if not t["table_name"][0] == "<"]
            assert all(t["access_type"] != "ALL" for t in scans), (name, plan)
            assert "ix_messages_to_number_id" in lowered, (name, plan)
            if name == "thread":
                assert "ix_messages_from_number_id" in lowered, (name, plan)
        else:
            assert "seq scan" not in lowered, (name, plan)
            assert "ix_messages_to_number_id" in lowered, (name, plan)
