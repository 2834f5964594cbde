"""`serve --workers 2` on SQLite and PostgreSQL: two processes serve one port, exactly one of
them (the holder of the "dispatcher" lease) sends, every message is sent exactly once, and when
that leader is killed with SIGKILL the other process (or the one uvicorn starts in its place)
takes over and sending resumes within seconds.

Two ways to meet Plivo: simulator mode (each worker has its own in-process simulator, all
signing with the one token `serve` hands its workers, so any worker verifies any callback), and
credentials with `plivo-tracker simulate` as its own process, which counts every message it was
sent, across the hand-over.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from plivo_tracker.db.engine import make_engine
from plivo_tracker.loops import owner_pid
from tests.conftest import AUTH, free_port
from tests.e2e.server import Server, simulator_process
from tests.e2e.test_faults_e2e import Run

pytestmark = pytest.mark.slow

DEADLINE = 60.0  # seconds: generous bounds for every wait below
BATCH = 12
LEADERS = 'plivo_tracker_leader{lease="dispatcher"}'
STORED = 'plivo_tracker_callbacks_total{outcome="stored"}'


def lease_owner(database: str, name: str = "dispatcher") -> str | None:
    """The owner of lease `name` as the database has it (None: nobody, or released)."""
    query = f"SELECT owner FROM leases WHERE name = '{name}'"
    if database.startswith("sqlite"):
        path = database.split(":///", 1)[1]
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
            row = conn.execute(query).fetchone()
        return row[0] if row else None

    async def fetch() -> Any:
        engine = make_engine(database)
        try:
            async with engine.connect() as conn:
                return (await conn.exec_driver_sql(query)).scalar()
        finally:
            await engine.dispose()

    owner: str | None = asyncio.run(fetch())
    return owner


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")", 1)[1].split()[0] == "Z")


def parent_of(pid: int) -> int | None:
    stat = Path(f"/proc/{pid}/stat")
    if not stat.exists():
        return None
    return int(stat.read_text().split(")", 1)[1].split()[1])


def until(check: Callable[[], Any], what: str, seconds: float = DEADLINE) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    pytest.fail(f"not {what} within {seconds} s")


class Client(Run):
    """The faults test's client (send, read, settle; each send a new connection, which the
    kernel hands to either worker), plus what workers add: /metrics and who leads."""

    def __init__(self, base: str) -> None:
        super().__init__(base, sim="")

    def metric(self, series: str) -> float | None:
        """A series from /metrics: with workers, all of them together whichever answers."""
        text = httpx.get(self.base + "/metrics", headers=AUTH, timeout=5).text
        for line in text.splitlines():
            if line.startswith(series + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

    def leads_here(self) -> bool:
        body = httpx.get(self.base + "/ready", timeout=5).json()
        here: bool = body["leaders"]["dispatcher"]["here"]
        assert body["leaders"]["dispatcher"]["held"] or not here
        return here


@pytest.fixture(params=["simulator-mode", "standalone-simulator"])
def plivo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    """Where the workers send: their in-process simulators (None), or a `simulate` process."""
    if request.param == "simulator-mode":
        yield None
        return
    with simulator_process(tmp_path, "--speed", "20", "--list-per-minute", "600") as base:
        yield base


def test_two_workers_one_leader_each_message_once_and_a_killed_leader_replaced(
    tmp_path: Path, database: str, plivo: str | None
) -> None:
    port = free_port()
    env = {
        "WORKERS": "2",
        "PORT": str(port),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "PLIVO_MPS": "200",
        "LOG_LEVEL": "info",
    }
    if plivo is None:
        env.update(PLIVO_AUTH_ID="", PLIVO_AUTH_TOKEN="")
    else:
        env.update(
            PLIVO_API_URL=plivo,
            PLIVO_SRC="14155550100",
            ALLOW_PRIVATE_CALLBACK_URL="true",
            PLIVO_LIST_PER_MINUTE="600",
        )
    server = Server(tmp_path, database, "workers", **env)
    seen: set[int] = set()
    try:
        server.wait_healthy()
        client = Client(server.base)
        leader = until(lambda: owner_pid(lease_owner(database)), "a leader")
        seen.add(leader)
        assert parent_of(leader) in (server.proc.pid, None)  # a worker of this serve

        # Both processes answer on the port: one leads the dispatcher, the other does not.
        answers: set[bool] = set()
        until(lambda: answers.add(client.leads_here()) or len(answers) == 2, "both workers seen")

        first = client.send(BATCH)
        for message in client.settle(first):
            accepted = [a for a in message["attempts"] if a["outcome"] == "accepted"]
            assert len(accepted) == 1, message["attempts"]
        assert owner_pid(lease_owner(database)) == leader  # one leader all along
        # /metrics counts every worker, whichever answers: one leader; counters never go back.
        assert client.metric(LEADERS) == 1
        stored = [client.metric(STORED) or 0.0 for _ in range(10)]
        assert stored == sorted(stored)
        assert stored[0] >= 2 * BATCH  # at least `queued` and `sent` for each message

        # The leader dies without a word; sends keep being taken meanwhile (by the other one).
        os.kill(leader, signal.SIGKILL)
        until(lambda: not alive(leader), "the leader gone", seconds=10)
        second = client.send(BATCH)
        successor = until(
            lambda: (pid := owner_pid(lease_owner(database))) not in (None, leader) and pid,
            "a new leader",
        )
        seen.add(successor)
        assert alive(successor)
        client.settle(second)
        third = client.send(BATCH)
        client.settle(third)
        # The successor counts as the one leader; the dead one's gauge is forgotten.
        assert client.metric(LEADERS) == 1
        # Every callback verified at whichever worker it reached (one simulator token for all).
        metrics = httpx.get(server.base + "/metrics", headers=AUTH, timeout=5).text
        assert "plivo_tracker_signature_failures_total{" not in metrics
        everything = client.messages(client.ids)
    finally:
        server.stop(graceful=True)
        for pid in seen:  # the workers ended with their parent
            with contextlib.suppress(pytest.fail.Exception):
                until(lambda pid=pid: not alive(pid), f"worker {pid} stopped", seconds=15)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
                pytest.fail(f"worker {pid} outlived serve")

    # Each message sent exactly once: one accepted attempt each (and, where the simulator is
    # its own process, one message per number created there).
    assert len(everything) == 3 * BATCH
    assert all(m["settled"] for m in everything)
    for message in everything:
        accepted = [a for a in message["attempts"] if a["outcome"] == "accepted"]
        assert len(accepted) == 1, message
        local = [e["status"] for e in message["events"] if e["source"] == "local"]
        assert local.count("accepted") == 1, message["events"]
    if plivo is not None:
        stats = httpx.get(plivo + "/_simulator/stats", timeout=5).json()
        assert sorted(stats["by_destination"]) == sorted(n.lstrip("+") for n in client.numbers)
        assert set(stats["by_destination"].values()) == {1}
        assert stats["accepted"] == len(client.numbers)

    log = server.log_text()
    assert "Traceback" not in log
    assert log.count('"leader.gained"') >= 2, log  # the first leader, then its successor
    assert '"leader.released"' in log  # the last one handed over cleanly on SIGTERM


def children_of(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().split(")", 1)[1].split()[1]) == parent:
                found.append(int(stat.parent.name))
    return found


def workers_of(parent: int) -> list[int]:
    """The uvicorn workers among `parent`'s children (multiprocessing's spawned processes)."""
    found = []
    for pid in children_of(parent):
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


def test_workers_stop_by_themselves_when_serve_is_killed(tmp_path: Path) -> None:
    """SIGKILL to `serve` itself: its workers notice they lost their parent and shut down
    (leases released), instead of serving on as orphans that hold the port."""
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"left by an earlier run")
    server = Server(
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'orphans.db'}",
        "orphans",
        WORKERS="2",
        PORT=str(port),
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        PLIVO_AUTH_ID="",
        PLIVO_AUTH_TOKEN="",
        LOG_LEVEL="info",
        # Given (not made by serve, which cannot remove it when killed): emptied at start.
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    children: list[int] = []
    try:
        server.wait_healthy()
        # Two workers (and multiprocessing's resource tracker), all children of serve.
        until(lambda: server.log_text().count('"app.started"') == 2, "two workers started")
        assert len(workers_of(server.proc.pid)) == 2
        children = children_of(server.proc.pid)
        until(lambda: owner_pid(lease_owner(server_db(tmp_path))) in children, "a leader")
        server.proc.kill()
        server.proc.wait(timeout=10)
        for pid in children:
            until(lambda pid=pid: not alive(pid), f"worker {pid} gone", seconds=30)
        assert lease_owner(server_db(tmp_path)) is None  # the leader released its lease
        with contextlib.closing(socket.socket()) as s:
            s.bind(("127.0.0.1", port))  # nobody holds the port any more
    finally:
        server.stop(graceful=False)
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert server.log_text().count('"app.orphaned"') == 2
    assert not (metrics_dir / "counter_1.db").exists()  # an earlier run's files went first


def server_db(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'orphans.db'}"
