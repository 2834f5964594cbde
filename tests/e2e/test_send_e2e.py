"""Real processes, real HTTP: `serve` (and `simulate`) + `plivo-tracker send --wait`.

1. serve in simulator mode (no credentials): the in-process simulator's signed callbacks come
   back to PUBLIC_BASE_URL over HTTP.
2. serve with credentials + `plivo-tracker simulate` as its own process at PLIVO_API_URL: the
   Message API and the callbacks both cross real HTTP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import API_KEY, AUTH, AUTH_ID, TOKEN, free_port
from tests.e2e.server import Server, server_cmd

pytestmark = pytest.mark.slow


def _send_wait(tmp_path: Path, base: str, *numbers: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "plivo_tracker", "send", "--server", base, "--wait"]
    for n in numbers:
        args += ["--to", n]
    args += ["--text", "Your code is 482193", "--timeout", "90"]
    env = {**os.environ, "PLIVO_TRACKER_API_KEY": API_KEY}
    return subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=150, env=env)


def _statuses(base: str, count: int) -> list[str]:
    return [
        httpx.get(f"{base}/api/messages/{i}", headers=AUTH).json()["status"]
        for i in range(1, count + 1)
    ]


def test_serve_in_simulator_mode(tmp_path: Path, database: str) -> None:
    port = free_port()
    server = Server(
        tmp_path,
        database,
        "sim-mode",
        PORT=str(port),
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        PLIVO_AUTH_ID="",
        PLIVO_AUTH_TOKEN="",
    )
    try:
        server.wait_healthy()
        done = _send_wait(tmp_path, server.base, "+14155550101", "+14155550102", "+14155550103")
        assert done.returncode in (0, 3), done.stderr  # 3: some message ended not delivered
        statuses = _statuses(server.base, 3)
        assert set(statuses) <= {"delivered", "undelivered", "failed"}
        events = httpx.get(f"{server.base}/api/messages/1", headers=AUTH).json()["events"]
        local = [e["status"] for e in events if e["source"] == "local"]
        assert local == ["accepted", "queued"]  # our own changes, then Plivo's callbacks
        callbacks = [e for e in events if e["source"] == "callback"]
        assert callbacks
        assert all(e["signature_scheme"] == "v3" for e in callbacks)
    finally:
        server.stop(graceful=True)
    assert "Traceback" not in server.log_text()


def test_serve_against_the_standalone_simulator(tmp_path: Path, database: str) -> None:
    sim_port, port = free_port(), free_port()
    env = {
        **os.environ,
        "PLIVO_AUTH_ID": AUTH_ID,
        "PLIVO_AUTH_TOKEN": TOKEN,
        "LOG_LEVEL": "warning",
    }
    sim_log = (tmp_path / "simulate.log").open("wb")
    cmd = [
        server_cmd()[0],
        "simulate",
        "--port",
        str(sim_port),
        "--speed",
        "20",
        "--fail-first",
        "2",
        "--dup-rate",
        "0.3",
    ]
    sim = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=sim_log, stderr=subprocess.STDOUT)
    server = Server(
        tmp_path,
        database,
        "with-sim",
        PORT=str(port),
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        ALLOW_PRIVATE_CALLBACK_URL="true",  # the simulator calls back on loopback
        PLIVO_API_URL=f"http://127.0.0.1:{sim_port}",
        PLIVO_SRC="14155550100",
        RECONCILE_AFTER_SECONDS="1",  # each 500 is looked up before the next attempt
        PLIVO_LIST_PER_MINUTE="600",
    )
    try:
        server.wait_healthy()
        done = _send_wait(tmp_path, server.base, "+14155550101", "+14155550102")
        assert done.returncode in (0, 3), done.stderr
        assert set(_statuses(server.base, 2)) <= {"delivered", "undelivered", "failed"}
        listed = httpx.get(
            f"http://127.0.0.1:{sim_port}/v1/Account/{AUTH_ID}/Message/", auth=(AUTH_ID, TOKEN)
        ).json()
        assert listed["meta"]["total_count"] == 2  # two 500s first, still each sent once
        first = httpx.get(f"{server.base}/api/messages/1", headers=AUTH).json()
        assert json.dumps(first)  # a full message document
    finally:
        server.stop(graceful=True)
        sim.terminate()
        sim.wait(timeout=30)
        sim_log.close()
