"""Every message accounted for, end to end over real HTTP (issue 10's proof): the standalone
simulator (`plivo-tracker simulate`), one `serve` and one `worker` process, so two dispatchers
share the outbox, on SQLite and PostgreSQL. For each fault, every message is sent exactly once
(counted at the simulator) and settles within the bound this test states; the 401 and the 404
fail nothing."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import AUTH, AUTH_ID, TOKEN, free_port
from tests.e2e.server import Server, server_cmd, simulator_process

SETTLE_WITHIN = 60.0  # seconds, per phase: the bound every message must meet
CALLBACK_DROP_RATE = "0.25"  # a quarter of all messages never get a callback: the sweeper
NO_RECEIPT_PREFIX = "1415557"  # destinations that end at `sent`


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[str]:
    args = ["--speed", "40", "--fail-rate", "0.05", "--undelivered-rate", "0.05"]
    args += ["--dup-rate", "0.1", "--callback-drop-rate", CALLBACK_DROP_RATE]
    args += ["--sent-final-prefix", NO_RECEIPT_PREFIX, "--list-per-minute", "600"]
    args += ["--hang-seconds", "3", "--seed", "7"]
    with simulator_process(tmp_path, *args) as base:
        yield base


def _env(sim: str, port: int) -> dict[str, str]:
    return {
        "PORT": str(port),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "ALLOW_PRIVATE_CALLBACK_URL": "true",
        "PLIVO_API_URL": sim,
        "PLIVO_SRC": "14155550100",
        "PLIVO_MPS": "200",
        "PLIVO_TIMEOUT_SECONDS": "1",
        "PLIVO_LIST_PER_MINUTE": "600",
        "RECONCILE_AFTER_SECONDS": "1",
        "STUCK_AFTER_SECONDS": "2",
        "SWEEP_INTERVAL_SECONDS": "0.5",
        "NO_RECEIPT_AFTER_SECONDS": "3",
        "RESEND_ERROR_CODES": "none",  # "sent exactly once" is what this test counts
        "LOG_LEVEL": "info",
    }


class Run:
    def __init__(self, base: str, sim: str) -> None:
        self.base, self.sim = base, sim
        self.numbers: list[str] = []
        self.ids: list[int] = []
        self._next = 0

    def faults(self, **values: Any) -> None:
        resp = httpx.put(self.sim + "/_simulator/faults", json=values, timeout=5)
        assert resp.status_code == 200, resp.text

    def send(self, count: int, prefix: str = "1415555") -> list[int]:
        ids = []
        for _ in range(count):
            number = f"+{prefix}{self._next:04d}"
            self._next += 1
            resp = httpx.post(
                self.base + "/api/messages",
                json={"to": number, "text": "hello"},
                timeout=10,
                headers=AUTH,
            )
            assert resp.status_code == 202, resp.text
            ids.append(resp.json()["messages"][0]["id"])
            self.numbers.append(number)
        self.ids.extend(ids)
        return ids

    def messages(self, ids: list[int]) -> list[dict[str, Any]]:
        return [
            httpx.get(f"{self.base}/api/messages/{i}", timeout=10, headers=AUTH).json() for i in ids
        ]

    def until(self, check: Callable[[], bool], seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.25)
        pytest.fail(f"not {what} within {seconds} s")

    def settle(self, ids: list[int]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []

        def settled() -> bool:
            nonlocal found
            found = self.messages(ids)
            return all(m["settled"] for m in found)

        start = time.monotonic()
        try:
            self.until(settled, SETTLE_WITHIN, "settled")
        except pytest.fail.Exception:
            pytest.fail(f"not settled within {SETTLE_WITHIN} s: {[m['status'] for m in found]}")
        assert time.monotonic() - start <= SETTLE_WITHIN
        return found

    def ready(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(self.base + "/ready", timeout=5).json()
        return body


def test_every_message_is_sent_once_and_settles_under_each_fault(
    tmp_path: Path, database: str, simulator: str
) -> None:
    port = free_port()
    serve = Server(tmp_path, database, "serve", **_env(simulator, port))
    serve.wait_healthy()  # it migrates SQLite: the worker starts on the migrated schema
    worker_log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [server_cmd()[0], "worker"],
        cwd=tmp_path,
        env={
            **os.environ,
            "DATABASE_URL": database,
            "PLIVO_AUTH_ID": AUTH_ID,
            "PLIVO_AUTH_TOKEN": TOKEN,
            **_env(simulator, port),
        },
        stdout=worker_log,
        stderr=subprocess.STDOUT,
    )
    run = Run(serve.base, simulator)
    try:
        # 1. A 500 after Plivo created the message: looked up and adopted, never resent.
        run.faults(fail_after_create=4, fail_status=500)
        ids = run.send(8)
        run.settle(ids)

        # 2. A timeout after create (the answer comes after 3 s; we wait 1 s).
        run.faults(timeout_after_create=3)
        ids = run.send(6)
        run.settle(ids)

        # 3. A 401 in the middle of a run: sending pauses, nothing fails, then it resumes.
        first = run.send(4)
        run.faults(unauthorized=True)
        paused = run.send(6)
        run.until(lambda: run.ready()["status"] == "degraded", 20, "degraded")
        assert "401" in run.ready()["reason"]
        time.sleep(1.0)
        assert all(m["status"] == "accepted" for m in run.messages(paused))
        run.faults(unauthorized=False)
        found = run.settle(first + paused)
        assert not any(m["error_detail"] and "401" in m["error_detail"] for m in found)
        run.until(lambda: run.ready()["status"] == "ok", 30, "resumed")

        # 4. A 404 (a wrong auth id or API address): the same.
        run.faults(not_found=True)
        paused = run.send(4)
        run.until(lambda: run.ready()["status"] == "degraded", 20, "degraded")
        run.faults(not_found=False)
        run.settle(paused)

        # 5. Destinations that never return a receipt: "sent, no receipt".
        ids = run.send(3, prefix=NO_RECEIPT_PREFIX)
        found = run.settle(ids)
        assert {(m["status"], m["settled_reason"]) for m in found} == {("sent", "no_receipt")}

        # Dropped callbacks ran through every phase: the sweeper settled those messages.
        stats = httpx.get(simulator + "/_simulator/stats", timeout=5).json()
        everything = run.messages(run.ids)
        assert all(m["settled"] for m in everything)
        swept = [m for m in everything if "callback" not in {e["source"] for e in m["events"]}]
        assert swept  # messages whose callbacks were all lost ...
        assert all("reconcile" in {e["source"] for e in m["events"]} for m in swept)  # ... swept
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        worker_log.close()
        serve.stop(graceful=True)
    # Exactly once, counted at the simulator: one message per number, nothing else.
    created = stats["by_destination"]
    assert sorted(created) == sorted(n.lstrip("+") for n in run.numbers)
    assert set(created.values()) == {1}
    assert stats["accepted"] == len(run.numbers)
    for log in (serve.log_text(), (tmp_path / "worker.log").read_text()):
        assert "Traceback" not in log
