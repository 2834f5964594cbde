"""The CLI as a new user runs it: serve, status against a live server, graceful stop, db upgrade."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from plivo_tracker.db.engine import make_engine
from plivo_tracker.messages.models import callback_nonces
from tests.conftest import (
    API_KEY,
    _pg_drop,
    callback_fields,
    create_pg_database,
    new_uuid,
    signed_form,
)
from tests.e2e.server import Server

pytestmark = pytest.mark.slow


def _cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PLIVO_TRACKER_API_KEY": API_KEY, **env}
    return subprocess.run(
        [sys.executable, "-m", "plivo_tracker", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_status_command_against_a_running_server(tmp_path: Path) -> None:
    server = Server(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}", "cli")
    try:
        server.wait_healthy()
        uuid = new_uuid()
        for status, seq in (("queued", "1"), ("undelivered", "3"), ("sent", "2")):
            extra = {"ErrorCode": "80"} if status == "undelivered" else {}
            target, body, headers = signed_form(
                callback_fields(uuid, status, Sequence=seq, **extra)
            )
            resp = httpx.post(server.base + target, content=body, headers=headers)
            assert resp.status_code == 200

        shown = _cli("status", uuid, "--server", server.base, cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert "undelivered" in shown.stdout
        assert "Destination temporarily unavailable" in shown.stdout
        assert "stale" in shown.stdout  # the late "sent" is in the timeline, not the status

        as_json = _cli("status", uuid, "--json", "--server", server.base, cwd=tmp_path)
        data = json.loads(as_json.stdout)
        assert data["status"] == "undelivered"
        assert [e["status"] for e in data["events"]] == ["queued", "undelivered", "sent"]

        missing = _cli("status", "no-such-message", "--server", server.base, cwd=tmp_path)
        assert missing.returncode == 1
        assert missing.stderr.strip().count("\n") == 0
        assert "404" in missing.stderr
    finally:
        server.stop(graceful=True)


async def _fire(base: str, n: int, stop_after: int, proc: subprocess.Popen[bytes]) -> set[str]:
    """Send n signed callbacks 20 at a time; SIGTERM the server after `stop_after` acks."""
    acked: set[str] = set()
    queue = list(range(n))

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            queue.pop()
            target, body, headers = signed_form(callback_fields(new_uuid(), "delivered"))
            try:
                resp = await client.post(base + target, content=body, headers=headers)
            except httpx.HTTPError:
                continue  # refused after shutdown began: not acknowledged, Plivo would retry
            if resp.status_code == 200:
                acked.add(headers["X-Plivo-Signature-V3-Nonce"])
                if len(acked) == stop_after:
                    proc.send_signal(signal.SIGTERM)

    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(20)))
    return acked


async def _stored(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return set((await conn.execute(select(callback_nonces.c.nonce))).scalars().all())
    finally:
        await engine.dispose()


async def test_sigterm_finishes_in_flight_callbacks(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'term.db'}"
    server = Server(tmp_path, url, "term")
    try:
        server.wait_healthy()
        acked = await _fire(server.base, 600, 200, server.proc)
        returncode = server.proc.wait(timeout=30)
    finally:
        server.stop(graceful=True)
    # uvicorn re-raises SIGTERM after its clean shutdown.
    assert returncode in (0, -signal.SIGTERM), server.log_text()
    assert len(acked) >= 200
    assert acked <= await _stored(url)
    assert "Traceback" not in server.log_text()


async def test_db_upgrade_then_serve_on_postgresql(tmp_path: Path) -> None:
    name = f"plivo_tracker_cli_{os.getpid()}"
    url = await asyncio.to_thread(create_pg_database, name)
    try:
        upgraded = _cli("db", "upgrade", cwd=tmp_path, DATABASE_URL=url)
        assert upgraded.returncode == 0, upgraded.stderr
        assert "revision" in upgraded.stdout
        server = Server(tmp_path, url, "pg")
        try:
            server.wait_healthy()
            assert server.wait_ready().status_code == 200
            fields = callback_fields(new_uuid(), "sent")
            target, body, headers = signed_form(fields)
            async with httpx.AsyncClient() as client:
                resp = await client.post(server.base + target, content=body, headers=headers)
            assert resp.json() == {"result": "stored"}
            engine = make_engine(url)
            try:
                async with engine.connect() as conn:
                    count = (
                        await conn.execute(select(func.count()).select_from(callback_nonces))
                    ).scalar_one()
            finally:
                await engine.dispose()
            assert count == 1
        finally:
            server.stop(graceful=True)
    finally:
        await _pg_drop(name)
