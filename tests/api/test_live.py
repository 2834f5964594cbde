"""WS /ws over a real port (uvicorn + the websockets client), on real SQLite and PostgreSQL:
commit order, resume with ?since= and no gap or duplicate at the seam, auth, filters, heartbeats."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
import websockets
from sqlalchemy import Connection, func, select
from websockets.asyncio.client import ClientConnection

from plivo_tracker import composition
from plivo_tracker.app import create_app
from plivo_tracker.config import Settings
from plivo_tracker.db.engine import Reader, make_reader
from plivo_tracker.messages.models import status_events
from tests.conftest import AUTH, callback_fields, free_port, new_uuid, signed_form

Serve = Callable[..., Any]


@asynccontextmanager
async def _serving(settings: Settings) -> AsyncIterator[str]:
    port = free_port()
    app = create_app(settings, migrate=False, dispatch=False)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("server did not start")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def serve(
    make_settings: Callable[..., Settings], db_url: str
) -> AsyncIterator[Callable[..., Any]]:
    """serve(**settings) → an async context manager yielding "host:port" of a live server."""

    def _serve(**overrides: Any) -> Any:
        return _serving(make_settings(database_url=db_url, **overrides))

    return _serve


@pytest.fixture
async def host(serve: Serve) -> AsyncIterator[str]:
    async with serve() as h:
        yield h


async def _callback(
    http: httpx.AsyncClient, uuid: str, status: str, seq: int, **extra: str
) -> None:
    target, body, headers = signed_form(callback_fields(uuid, status, Sequence=str(seq), **extra))
    resp = await http.post(target, content=body, headers=headers)
    assert resp.status_code == 200, resp.text


async def _journey(http: httpx.AsyncClient, uuid: str) -> None:
    """queued → sent → delivered, plus a late duplicate `sent` that changes nothing; returns
    once the projector has applied all four (a 200 means journaled: docs/adr/0011)."""
    for seq, status in enumerate(("queued", "sent", "delivered"), start=1):
        await _callback(http, uuid, status, seq)
    await _callback(http, uuid, "sent", 9)
    async with asyncio.timeout(10):
        while True:
            got = await http.get(f"/api/messages/{uuid}")
            if got.status_code == 200 and len(got.json()["events"]) == 4:
                return
            await asyncio.sleep(0.01)


async def _frames(ws: ClientConnection, n: int, within: float = 10.0) -> list[dict[str, Any]]:
    """The next n status frames (control frames skipped)."""
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(within):
        while len(out) < n:
            frame = json.loads(await ws.recv())
            if frame["type"] == "status":
                out.append(frame)
    return out


async def _ready(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "ready":
                return frame  # type: ignore[no-any-return]
            assert frame["type"] == "status"


async def _changes_in_db(db_url: str) -> list[tuple[int, str, str | None]]:
    """(event id, message status after, before) of every change, in id order: the truth."""
    from plivo_tracker.db.engine import make_engine

    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(
                    status_events.c.id,
                    status_events.c.message_status,
                    status_events.c.previous_status,
                ).order_by(status_events.c.id)
            )
            return [(r[0], r[1], r[2]) for r in rows if r[1] != r[2]]
    finally:
        await engine.dispose()


def _http(host: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://{host}", timeout=10, headers=AUTH)


async def test_frames_are_committed_changes_in_order(host: str, db_url: str) -> None:
    async with (
        _http(host) as http,
        websockets.connect(f"ws://{host}/ws", additional_headers=AUTH) as ws,
    ):
        await _ready(ws)
        uuids = [new_uuid() for _ in range(3)]
        await asyncio.gather(*(_journey(http, u) for u in uuids))
        frames = await _frames(ws, 9)  # 3 changes each; the late `sent` is not a change
    ids = [f["id"] for f in frames]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert [(f["id"], f["status"], f["previous_status"]) for f in frames] == await _changes_in_db(
        db_url
    )
    for uuid in uuids:
        mine = [f for f in frames if f["message_uuid"] == uuid]
        assert [f["status"] for f in mine] == ["queued", "sent", "delivered"]
        assert mine[0]["previous_status"] is None
        assert {f["message_id"] for f in mine} == {mine[0]["message_id"]}
        assert mine[-1]["at"].endswith("Z")


async def test_failure_frame_carries_the_error_code(host: str) -> None:
    async with (
        _http(host) as http,
        websockets.connect(f"ws://{host}/ws", additional_headers=AUTH) as ws,
    ):
        await _ready(ws)
        await _callback(http, new_uuid(), "undelivered", 1, ErrorCode="30")
        [frame] = await _frames(ws, 1)
    assert frame["status"] == "undelivered"
    assert frame["error_code"] == "30"


async def test_resume_with_since_has_no_gap_and_no_duplicate(host: str, db_url: str) -> None:
    async with _http(host) as http:
        async with websockets.connect(f"ws://{host}/ws", additional_headers=AUTH) as ws:
            await _ready(ws)
            await _journey(http, new_uuid())
            first = await _frames(ws, 3)
        # Disconnected: these changes happen while nobody listens.
        missed = [new_uuid() for _ in range(2)]
        for u in missed:
            await _journey(http, u)
        async with websockets.connect(
            f"ws://{host}/ws?since={first[-1]['id']}", additional_headers=AUTH
        ) as ws:
            ready_task = asyncio.ensure_future(_frames(ws, 6 + 3))
            await asyncio.sleep(0.05)
            await _journey(http, new_uuid())  # and live ones after the replay
            rest = await ready_task
    got = [(f["id"], f["status"], f["previous_status"]) for f in first + rest]
    assert got == await _changes_in_db(db_url)


async def test_resume_seam_under_concurrent_writes(host: str, db_url: str) -> None:
    """Clients reconnect with ?since= while callbacks keep committing: every client ends with
    exactly the database's changes above its cursor, in order."""
    async with _http(host) as http:
        writers = asyncio.ensure_future(
            asyncio.gather(*(_journey(http, new_uuid()) for _ in range(15)))
        )
        cursor = 0
        seen: list[int] = []
        while not writers.done():
            async with websockets.connect(
                f"ws://{host}/ws?since={cursor}", additional_headers=AUTH
            ) as ws:
                try:
                    async with asyncio.timeout(0.15):
                        while True:
                            frame = json.loads(await ws.recv())
                            if frame["type"] == "status":
                                seen.append(frame["id"])
                                cursor = frame["id"]
                except TimeoutError:
                    pass  # drop the connection mid-stream and resume
        await writers
        async with websockets.connect(
            f"ws://{host}/ws?since={cursor}", additional_headers=AUTH
        ) as ws:
            ready = await _ready_collecting(ws, seen)
        assert ready["last_id"] >= cursor
    assert seen == [c[0] for c in await _changes_in_db(db_url)]


class CountingReader:
    """The server's Reader, recording each read that goes through it: (function, result)."""

    def __init__(self, inner: Reader) -> None:
        self.inner = inner
        self.calls: list[tuple[str, Any]] = []

    async def run(self, fn: Callable[[Connection], Any]) -> Any:
        result = await self.inner.run(fn)
        self.calls.append((getattr(fn, "func", fn).__name__, result))
        return result

    async def close(self) -> None:
        await self.inner.close()

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


async def _newest_event_id(db_url: str) -> int:
    from plivo_tracker.db.engine import make_engine

    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(select(func.max(status_events.c.id)))).scalar() or 0)
    finally:
        await engine.dispose()


async def _until_ready(ws: ClientConnection) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The status frames before `ready` (a replay), and `ready`."""
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "ready":
                return frames, frame
            assert frame["type"] == "status"
            frames.append(frame)


def _triples(frames: list[dict[str, Any]]) -> list[tuple[int, str, str | None]]:
    return [(f["id"], f["status"], f["previous_status"]) for f in frames]


async def test_nobody_listening_reads_no_events_and_later_clients_miss_nothing(
    serve: Serve, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no client the feed reads only the newest event id, never the events; a client that
    comes later with ?since= still gets exactly the changes after its id, and one without
    ?since= gets only the changes committed after it connected."""
    readers: list[CountingReader] = []

    def counting_reader(engine: Any) -> Reader:
        readers.append(CountingReader(make_reader(engine)))
        return readers[-1]

    monkeypatch.setattr(composition, "make_reader", counting_reader)
    async with serve() as host, _http(host) as http:
        [reader] = readers
        for _ in range(3):
            await _journey(http, new_uuid())
        changes = await _changes_in_db(db_url)
        head = await _newest_event_id(db_url)
        assert len(changes) == 9
        # Wait for the feed to have looked since the last commit (it reads the newest id then;
        # a feed that reads events instead fails the assertion below at once).
        async with asyncio.timeout(10):
            while ("newest_event_id", head) not in reader.calls:
                if "events_after" in reader.names():
                    break
                await asyncio.sleep(0.01)
        assert "events_after" not in reader.names()

        since = changes[4][0]  # in the middle of the second message's journey
        async with websockets.connect(
            f"ws://{host}/ws?since={since}", additional_headers=AUTH
        ) as resumed:
            replayed, ready = await _until_ready(resumed)
            assert _triples(replayed) == [c for c in changes if c[0] > since]
            assert ready["last_id"] == head
            async with websockets.connect(f"ws://{host}/ws", additional_headers=AUTH) as fresh:
                before, ready = await _until_ready(fresh)
                assert (before, ready["last_id"]) == ([], head)
                await _journey(http, new_uuid())
                new = [c for c in await _changes_in_db(db_url) if c[0] > head]
                assert len(new) == 3
                assert _triples(await _frames(fresh, 3)) == new
                assert _triples(await _frames(resumed, 3)) == new


async def _ready_collecting(ws: ClientConnection, seen: list[int]) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "ready":
                return frame  # type: ignore[no-any-return]
            seen.append(frame["id"])


async def test_filters_by_message_and_status(host: str) -> None:
    async with _http(host) as http:
        target, other = new_uuid(), new_uuid()
        # The target message must exist to filter on it; its first change is the cursor. (A
        # socket opened without ?since= starts at what its process had published, which may
        # be just before a change committed a moment earlier.)
        async with websockets.connect(f"ws://{host}/ws", additional_headers=AUTH) as everything:
            await _ready(everything)
            await _callback(http, target, "queued", 1)
            [queued] = await _frames(everything, 1)
        after = f"since={queued['id']}"
        async with (
            websockets.connect(
                f"ws://{host}/ws?message_id={target}&{after}", additional_headers=AUTH
            ) as by_message,
            websockets.connect(
                f"ws://{host}/ws?status=delivered&{after}", additional_headers=AUTH
            ) as by_status,
        ):
            await _ready(by_message)
            await _ready(by_status)
            await _journey(http, other)
            await _journey(http, target)
            mine = await _frames(by_message, 2)
            delivered = await _frames(by_status, 2)
    assert [f["status"] for f in mine] == ["sent", "delivered"]
    assert {f["message_uuid"] for f in mine} == {target}
    assert [f["message_uuid"] for f in delivered] == [other, target]


async def test_bad_parameters_are_refused_with_a_reason(host: str) -> None:
    for query, code in (("since=abc", "bad_since"), ("status=nope", "bad_status")):
        async with websockets.connect(f"ws://{host}/ws?{query}", additional_headers=AUTH) as ws:
            frame = json.loads(await ws.recv())
            assert frame == {"type": "error", "code": code, "message": frame["message"]}
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 4400


async def test_heartbeats_when_idle(serve: Serve) -> None:
    async with serve(live_heartbeat_seconds=0.1) as host:
        async with websockets.connect(f"ws://{host}/ws", additional_headers=AUTH) as ws:
            ready = await _ready(ws)
            async with asyncio.timeout(5):
                beat = json.loads(await ws.recv())
    assert beat["type"] == "heartbeat"
    assert beat["last_id"] == ready["last_id"]


@pytest.mark.parametrize("how", ["query", "first_message", "bearer"])
async def test_api_key_accepted(serve: Serve, how: str) -> None:
    async with serve(
        api_keys="k-live-1-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx,k-live-2-yyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
    ) as host:
        url, headers = f"ws://{host}/ws", {}
        if how == "query":
            url += "?api_key=k-live-2-yyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
        elif how == "bearer":
            headers = {"Authorization": "Bearer k-live-1-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}
        async with websockets.connect(url, additional_headers=headers) as ws:
            if how == "first_message":
                await ws.send(
                    json.dumps(
                        {"type": "auth", "api_key": "k-live-1-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}
                    )
                )
            ready = await _ready(ws)
    assert ready["type"] == "ready"


@pytest.mark.parametrize(
    ("send", "code", "close"),
    [
        (None, "unauthorized", 4401),
        ({"type": "auth", "api_key": "wrong"}, "unauthorized", 4401),
        ("not json", "bad_frame", 4400),
        ({"type": "hello"}, "bad_frame", 4400),
        (b"\x00binary", "bad_frame", 4400),
        ("[" * 1000, "bad_frame", 4400),
        (json.dumps({"type": "auth", "api_key": "k" * 2000}), "frame_too_large", 1009),
    ],
    ids=["none", "wrong-key", "not-json", "not-auth", "binary", "nested", "too-large"],
)
async def test_api_key_refused(serve: Serve, send: object, code: str, close: int) -> None:
    """Any bad first frame closes the stream with a code that says what was wrong."""
    async with serve(api_keys="k-live-1-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx") as host:
        async with websockets.connect(f"ws://{host}/ws?since=0") as ws:
            if send is not None:
                await ws.send(send if isinstance(send, str | bytes) else json.dumps(send))
            frame = json.loads(await ws.recv())
            assert frame["type"] == "error"
            assert frame["code"] == code
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == close


async def test_sends_stream_their_local_changes(serve: Serve) -> None:
    """A message sent through the API shows up as `accepted` before Plivo is ever called."""
    async with serve() as host, _http(host) as http:
        async with websockets.connect(f"ws://{host}/ws", additional_headers=AUTH) as ws:
            await _ready(ws)
            resp = await http.post(
                "/api/messages", json={"to": "+14155550123", "text": "hi", "from": "+14155550100"}
            )
            assert resp.status_code == 202
            [frame] = await _frames(ws, 1)
    assert frame["status"] == "accepted"
    assert frame["previous_status"] is None
    assert frame["message_id"] == resp.json()["messages"][0]["id"]


async def test_cross_site_pages_cannot_open_the_stream(host: str) -> None:
    evil = {**AUTH, "Origin": "https://evil.example.com"}
    async with websockets.connect(f"ws://{host}/ws", additional_headers=evil) as ws:
        frame = json.loads(await ws.recv())
        assert frame["code"] == "forbidden_origin"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4403
    own = {**AUTH, "Origin": f"http://{host}"}  # the dashboard itself
    async with websockets.connect(f"ws://{host}/ws", additional_headers=own) as ws:
        assert (await _ready(ws))["type"] == "ready"


async def test_a_send_that_adopts_a_placeholder_names_the_id_that_is_gone(
    host: str, db_url: str
) -> None:
    """A callback that beats the send's answer makes a placeholder message (its own id on the
    stream); when the send's answer adopts it, the frame says which id was merged away."""
    from datetime import UTC, datetime, timedelta

    from plivo_tracker.db.engine import make_engine, make_writer
    from plivo_tracker.outbound import repository as out_repo

    uuid = new_uuid()
    async with (
        _http(host) as http,
        websockets.connect(f"ws://{host}/ws", additional_headers=AUTH) as ws,
    ):
        await _ready(ws)
        body = {"to": "+14155550123", "text": "hi", "from": "+14155550100"}
        sent_id = (await http.post("/api/messages", json=body)).json()["messages"][0]["id"]
        await _callback(http, uuid, "sent", 2)
        accepted, early = await _frames(ws, 2)
        assert accepted["message_id"] == sent_id
        assert early["message_id"] != sent_id
        assert early["status"] == "sent"
        engine = make_engine(db_url)
        writer = make_writer(engine)
        now = datetime.now(UTC)
        try:
            [claim] = await writer.run(
                lambda c: out_repo.claim_due(c, now, "test", timedelta(seconds=30), 1)
            )
            await writer.run(lambda c: out_repo.record_accepted(c, claim, uuid, now, now))
        finally:
            await writer.close()
            await engine.dispose()
        [merged] = await _frames(ws, 1)  # another process's commit: seen at the next poll
    assert merged["message_id"] == sent_id
    assert merged["merged_from"] == early["message_id"]
    assert (merged["previous_status"], merged["status"]) == ("accepted", "sent")
    assert merged["message_uuid"] == uuid


async def test_websocket_connects_are_rate_limited_per_address(serve: Serve) -> None:
    async with serve(rate_limit_ws_connect="3/minute") as host:
        for _ in range(3):
            async with websockets.connect(f"ws://{host}/ws", additional_headers=AUTH) as ws:
                assert (await _ready(ws))["type"] == "ready"
        async with websockets.connect(f"ws://{host}/ws", additional_headers=AUTH) as ws:
            frame = json.loads(await ws.recv())
            assert frame["code"] == "rate_limited"
            assert frame["retry_after"] >= 1
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4429


async def test_a_rebound_host_cannot_open_the_stream(host: str) -> None:
    """DNS rebinding: the attacker's page is same-origin with itself, Host names it."""
    port = int(host.rsplit(":", 1)[1])
    rebound = f"rebind.attacker.example:{port}"
    headers = {**AUTH, "Origin": f"http://{rebound}"}
    with pytest.raises(websockets.InvalidStatus) as refused:
        # The browser resolved the attacker's name to this server: connect there, name it.
        async with websockets.connect(
            f"ws://{rebound}/ws", host="127.0.0.1", port=port, additional_headers=headers
        ):
            pass
    assert refused.value.response.status_code == 403


async def test_repeated_wrong_keys_on_the_stream_meet_4429(serve: Serve) -> None:
    async with serve(rate_limit_auth_failures="3/minute") as host:
        codes = []
        for _ in range(5):
            wrong = {"X-API-Key": "w" * 40}
            async with websockets.connect(f"ws://{host}/ws", additional_headers=wrong) as ws:
                await ws.recv()  # the error frame
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await ws.recv()
            assert closed.value.rcvd is not None
            codes.append(closed.value.rcvd.code)
    assert codes == [4401, 4401, 4401, 4429, 4429]
