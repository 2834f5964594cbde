"""Two live `serve` processes on one database: a change ingested by process B reaches a WebSocket
client of process A (PostgreSQL: LISTEN/NOTIFY; SQLite: A's feed polls the shared file), in
commit order, and a client that reconnects to the other process with ?since= misses nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.conftest import API_KEY, AUTH, callback_fields, new_uuid, signed_form
from tests.e2e.server import Server

pytestmark = pytest.mark.slow


@pytest.fixture
def two_servers(tmp_path: Path, database: str) -> Iterator[tuple[Server, Server]]:
    # SQLite has no NOTIFY: A sees B's commits at its next poll.
    a = Server(tmp_path, database, "a", LIVE_POLL_SECONDS="0.2")
    if database.startswith("sqlite"):
        a.wait_healthy()  # let A create the schema before B starts
    b = Server(tmp_path, database, "b", LIVE_POLL_SECONDS="0.2")
    try:
        a.wait_healthy()
        b.wait_healthy()
        yield a, b
    finally:
        a.stop(graceful=True)
        b.stop(graceful=True)


def _callback(base: str, uuid: str, status: str, seq: int) -> None:
    target, body, headers = signed_form(callback_fields(uuid, status, Sequence=str(seq)))
    resp = httpx.post(base + target, content=body, headers=headers, timeout=10)
    assert resp.status_code == 200, resp.text


def _ws(server: Server, query: str = "") -> ClientConnection:
    return connect(
        f"ws://127.0.0.1:{server.port}/ws{query}", open_timeout=10, additional_headers=AUTH
    )


def _until_ready(ws: ClientConnection) -> list[dict[str, Any]]:
    frames = []
    while True:
        frame = json.loads(ws.recv(timeout=10))
        if frame["type"] == "ready":
            return frames
        frames.append(frame)


def _status_frames(ws: ClientConnection, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < n:
        frame = json.loads(ws.recv(timeout=15))
        if frame["type"] == "status":
            out.append(frame)
    return out


def test_change_ingested_by_b_reaches_a_client_of_a(two_servers: tuple[Server, Server]) -> None:
    a, b = two_servers
    uuids = [new_uuid() for _ in range(4)]
    with _ws(a) as on_a:
        _until_ready(on_a)
        for u in uuids:  # alternate the processes that ingest
            _callback(b.base, u, "queued", 1)
            _callback(a.base, u, "sent", 2)
            _callback(b.base, u, "delivered", 3)
        frames = _status_frames(on_a, 12)
        assert [f["id"] for f in frames] == sorted(f["id"] for f in frames)
        for u in uuids:
            assert [f["status"] for f in frames if f["message_uuid"] == u] == [
                "queued",
                "sent",
                "delivered",
            ]
        # A send through B's API shows up on A too (its `accepted` change).
        resp = httpx.post(
            b.base + "/api/messages",
            json={"to": "+14155550123", "text": "hi", "from": "+14155550100"},
            timeout=10,
            headers=AUTH,
        )
        assert resp.status_code == 202
        [accepted] = _status_frames(on_a, 1)
        assert accepted["message_id"] == resp.json()["messages"][0]["id"]
        assert accepted["status"] == "accepted"

    # Resume on the *other* process from the middle: the same history, nothing more or less.
    middle = frames[5]["id"]
    with _ws(b, f"?since={middle}") as on_b:
        replayed = _until_ready(on_b)
    assert [f["id"] for f in replayed] == [f["id"] for f in frames[6:]] + [accepted["id"]]


def _tail(server: Server, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "plivo_tracker", "tail", "--server", server.base, *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_tail_follows_and_resumes(tmp_path: Path) -> None:
    server = Server(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'tail.db'}", "tail")
    try:
        server.wait_healthy()
        uuid = new_uuid()
        _callback(server.base, uuid, "queued", 1)
        live = _tail(server, "--count", "2", "--json", PLIVO_TRACKER_API_KEY=API_KEY)
        time.sleep(1.5)  # let it connect: it starts live, after the `queued` change
        _callback(server.base, uuid, "sent", 2)
        _callback(server.base, uuid, "delivered", 3)
        stdout, stderr = live.communicate(timeout=60)
        assert live.returncode == 0, stderr
        frames = [json.loads(line) for line in stdout.splitlines()]
        assert [f["status"] for f in frames] == ["sent", "delivered"]

        # --since replays from the database; the human format names the transition.
        replay = _tail(server, "--since", "0", "--count", "3", "--api-key", API_KEY)
        stdout, stderr = replay.communicate(timeout=60)
        assert replay.returncode == 0, stderr
        lines = stdout.splitlines()
        assert len(lines) == 3
        assert "- → queued" in lines[0]
        assert "sent → delivered" in lines[2]

        refused = _tail(server, "--count", "1", "--api-key", "wrong")
        _, stderr = refused.communicate(timeout=60)
        assert refused.returncode == 1
        assert "unauthorized" in stderr
    finally:
        server.stop(graceful=True)


def test_tail_prints_inbound_messages(tmp_path: Path) -> None:
    server = Server(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'tail-in.db'}", "tail-in")
    try:
        server.wait_healthy()
        uuid = new_uuid()
        _callback(server.base, uuid, "queued", 1)
        fields = {
            "From": "447700900123",
            "To": "14155550100",
            "Type": "sms",
            "Text": "Grüße 👋 STOP",
            "MessageUUID": new_uuid(),
        }
        target, body, headers = signed_form(fields, path="/plivo/inbound")
        assert httpx.post(server.base + target, content=body, headers=headers).status_code == 200
        as_json = _tail(server, "--since", "0", "--count", "2", "--json", "--api-key", API_KEY)
        stdout, stderr = as_json.communicate(timeout=60)
        assert as_json.returncode == 0, stderr
        frames = [json.loads(line) for line in stdout.splitlines()]
        assert [f["type"] for f in frames] == ["status", "message"]
        assert frames[1]["text"] == "Grüße 👋 STOP"
        human = _tail(
            server, "--since", "0", "--count", "2", "--api-key", API_KEY, PYTHONIOENCODING="utf-8"
        )
        stdout, stderr = human.communicate(timeout=60)
        assert human.returncode == 0, stderr
        assert "inbound +447700900123 → +14155550100: Grüße 👋 STOP" in stdout.splitlines()[1]
    finally:
        server.stop(graceful=True)
