"""PostgreSQL through PgBouncer in transaction mode (Debian's package, started by the test).

What works through it: the whole of `serve` (callbacks journaled and projected, sends through
the outbox and dispatcher, the API, the live stream, leases, advisory transaction locks,
NOTIFY) with DATABASE_POOLER=pgbouncer. What must connect directly: LISTEN (through PgBouncer it
connects and hears nothing), on DATABASE_DIRECT_URL, and `db upgrade`. What fails without the
setting: the engine's start-up settings (`unsupported startup parameter`) and, without them,
asyncpg's named prepared statements colliding on shared server connections.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from websockets.sync.client import connect

from plivo_tracker.db.engine import AsyncWriter, make_engine
from plivo_tracker.live.notify import Listener
from tests.conftest import AUTH, _pg_drop, create_pg_database, free_port
from tests.e2e.pgbouncer import PgBouncer, run_pgbouncer
from tests.e2e.server import Server, wait_projected

pytestmark = pytest.mark.slow

DEADLINE = 60.0
FINAL = {"delivered", "undelivered", "failed"}


@pytest.fixture
def pg_direct(tmp_path: Path) -> Iterator[str]:
    """A new, empty PostgreSQL database (its direct URL), dropped afterwards."""
    name = f"plivo_tracker_pgb_{os.getpid()}_{time.time_ns()}"
    url = create_pg_database(name)
    try:
        yield url
    finally:
        asyncio.run(_pg_drop(name))


@pytest.fixture
def bouncer(tmp_path: Path, pg_direct: str) -> Iterator[PgBouncer]:
    # Fewer server connections than the two servers' pools: they are shared between clients.
    with run_pgbouncer(tmp_path, pool_size=4) as b:
        yield b


def _pooled_env(bouncer: PgBouncer, direct: str) -> dict[str, str]:
    return {
        "DATABASE_URL": bouncer.url(direct),
        "DATABASE_POOLER": "pgbouncer",
        "DATABASE_DIRECT_URL": direct,
    }


def _listeners(direct: str) -> int:
    """Sessions of this database whose last statement was a LISTEN (PgBouncer's server
    connections run ours only inside transactions; a LISTEN session is the direct one)."""

    async def count() -> int:
        conn = await asyncpg.connect("postgresql://" + direct.split("://", 1)[1], timeout=5)
        try:
            n: int = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN %'"
            )
            return n
        finally:
            await conn.close()

    return asyncio.run(count())


def test_serve_through_pgbouncer(tmp_path: Path, pg_direct: str, bouncer: PgBouncer) -> None:
    env = _pooled_env(bouncer, pg_direct)
    # `db upgrade` with the pooled settings: it migrates over DATABASE_DIRECT_URL.
    subprocess.run(
        [sys.executable, "-m", "plivo_tracker", "db", "upgrade"],
        env={**os.environ, **env},
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=120,
    )
    # Simulator mode in both (one token: either verifies the other's callbacks). B starts first
    # and leads the projector and the dispatcher; A only serves, so what A's WebSocket clients
    # see was committed by B.
    common = {
        **env,
        "PLIVO_AUTH_ID": "",
        "PLIVO_AUTH_TOKEN": "",
        "SIMULATOR_AUTH_TOKEN": "pgbouncer-test-token",
        "LIVE_POLL_SECONDS": "0.5",
    }
    port_b, port_a = free_port(), free_port()
    b = Server(
        tmp_path,
        pg_direct,
        "b",
        PORT=str(port_b),
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port_b}",
        **common,
    )

    servers = [b]
    try:
        b.wait_healthy()
        a = Server(
            tmp_path,
            pg_direct,
            "a",
            PORT=str(port_a),
            PUBLIC_BASE_URL=f"http://127.0.0.1:{port_a}",
            **common,
        )
        servers.append(a)
        a.wait_healthy()
        ready_b = httpx.get(b.base + "/ready", timeout=5).json()
        assert ready_b["leaders"]["projector"]["here"] is True, ready_b
        assert ready_b["leaders"]["dispatcher"]["here"] is True, ready_b

        with connect(f"ws://127.0.0.1:{a.port}/ws", open_timeout=10, additional_headers=AUTH) as ws:
            while json.loads(ws.recv(timeout=10))["type"] != "ready":
                pass
            numbers = ["+14155550101", "+14155550102", "+14155550103"]
            resp = httpx.post(
                b.base + "/api/messages",
                json={"to": numbers, "text": "through the pooler"},
                headers=AUTH,
                timeout=10,
            )
            assert resp.status_code == 202, resp.text
            ids = {m["id"] for m in resp.json()["messages"]}

            # Sent by B's dispatcher to its simulator, whose signed callbacks come back over
            # HTTP, are journaled, projected by B, and read through A (all through PgBouncer).
            deadline = time.monotonic() + DEADLINE
            final: dict[int, str] = {}
            while len(final) < len(ids):
                assert time.monotonic() < deadline, f"not settled: {final}"
                for i in ids - set(final):
                    got = httpx.get(f"{a.base}/api/messages/{i}", headers=AUTH, timeout=10)
                    assert got.status_code == 200, got.text
                    if got.json()["status"] in FINAL:
                        final[i] = got.json()["status"]
                time.sleep(0.2)

            # A's live stream shows every one of them reaching that status.
            seen: dict[int, str] = {}
            deadline = time.monotonic() + 20
            while {i: seen.get(i) for i in ids} != final:
                assert time.monotonic() < deadline, f"stream saw {seen}, API {final}"
                frame = json.loads(ws.recv(timeout=20))
                if frame.get("type") == "status" and frame["message_id"] in ids:
                    seen[frame["message_id"]] = frame["status"]

        cursor, head = wait_projected(pg_direct)
        assert cursor == head > 0
        events = httpx.get(f"{a.base}/api/messages/{min(ids)}", headers=AUTH, timeout=10).json()
        callbacks = [e for e in events["events"] if e["source"] == "callback"]
        assert callbacks
        assert all(e["signature_scheme"] == "v3" for e in callbacks)
        # Each server listens on the direct URL (one session each), not through PgBouncer.
        assert _listeners(pg_direct) == 2
    finally:
        for server in reversed(servers):
            server.stop(graceful=True)
    for server in servers:
        log = server.log_text()
        assert "Traceback" not in log, log
        assert "listen.failed" not in log, log
    # PgBouncer itself saw nothing amiss (no WARNING or ERROR lines: only LOG).
    problems = [line for line in bouncer.log_text().splitlines() if " LOG " not in line]
    assert problems == [], problems


async def test_listen_through_pgbouncer_hears_nothing(pg_direct: str, bouncer: PgBouncer) -> None:
    """Why LISTEN takes DATABASE_DIRECT_URL: through PgBouncer it connects and listens without
    an error, on a server connection that goes back to the pool, and hears nothing."""
    heard = {"direct": 0, "pooled": 0}
    five = asyncio.Event()

    def wake(which: str) -> None:
        heard[which] += 1
        if heard["direct"] >= 5:
            five.set()

    direct = Listener(pg_direct, {"plivo_test": lambda: wake("direct")})
    pooled = Listener(bouncer.url(pg_direct), {"plivo_test": lambda: wake("pooled")})
    try:
        assert await direct.start()
        assert await pooled.start()  # no error: the failure is silent
        heard.update(direct=0, pooled=0)  # start() wakes every reader once
        # Other clients take the pooled server connections meanwhile.
        others = [
            await asyncpg.connect(
                "postgresql://" + bouncer.url(pg_direct).split("://", 1)[1],
                statement_cache_size=0,
            )
            for _ in range(6)
        ]
        await asyncio.gather(*(o.execute("SELECT pg_sleep(0.1)") for o in others))
        notifier = await asyncpg.connect("postgresql://" + pg_direct.split("://", 1)[1])
        try:
            for _ in range(5):
                await notifier.execute("NOTIFY plivo_test")
                await asyncio.sleep(0.1)
            await asyncio.wait_for(five.wait(), timeout=5)
            await asyncio.sleep(0.5)  # time enough for the pooled one, had it heard
        finally:
            await notifier.close()
            for o in others:
                await o.close()
        assert heard == {"direct": 5, "pooled": 0}
        # PgBouncer got them on the idle server connection that ran the LISTEN, and dropped them.
        assert "got packet 'A' from server when not linked" in bouncer.log_text()
    finally:
        await direct.close()
        await pooled.close()


async def _concurrent_transactions(engine: AsyncEngine, n: int = 20) -> list[int]:
    async def one(i: int) -> int:
        async with engine.begin() as conn:
            value = (await conn.execute(text("SELECT :i + 1"), {"i": i})).scalar_one()
            await conn.execute(text("SELECT pg_sleep(0.01)"))
            return int(value)

    # Every transaction finishes (its connection back in the pool) before a failure is raised.
    results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if isinstance(r, int)]


async def _rounds(engine: AsyncEngine, rounds: int) -> None:
    for _ in range(rounds):
        assert await _concurrent_transactions(engine) == [i + 1 for i in range(20)]


async def test_engine_through_pgbouncer_needs_the_pooler_setting(
    pg_direct: str, bouncer: PgBouncer
) -> None:
    url = bouncer.url(pg_direct)
    # The usual engine pins synchronous_commit as a start-up setting: PgBouncer refuses it.
    usual = make_engine(url)
    try:
        with pytest.raises(Exception, match="unsupported startup parameter"):
            async with usual.connect():
                pass
    finally:
        await usual.dispose()
    # Without start-up settings, asyncpg's prepared statements (named per client connection)
    # collide on the server connections PgBouncer shares between clients.
    bare = create_async_engine(url, pool_size=10, max_overflow=10)
    try:
        with pytest.raises(Exception, match="prepared statement"):
            await _rounds(bare, 5)
    finally:
        await bare.dispose()
    # DATABASE_POOLER=pgbouncer: no statement caches, unique names; durable writes still pin
    # synchronous_commit (SET LOCAL), background ones turn it off for their transaction only.
    pooled = make_engine(url, pgbouncer=True)
    try:
        await _rounds(pooled, 5)
        writer = AsyncWriter(pooled)

        def setting(conn: object) -> str:
            row = conn.exec_driver_sql("SHOW synchronous_commit").scalar_one()  # type: ignore[attr-defined]
            return str(row)

        assert await writer.run(setting) == "on"
        assert await writer.run(setting, background=True) == "off"
        assert await writer.run(setting) == "on"
    finally:
        await pooled.dispose()
