"""`plivo-tracker serve` as a subprocess for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest

from plivo_tracker.db.engine import make_engine
from plivo_tracker.inbound import repository as journal_repo
from tests.conftest import API_KEY, AUTH_ID, BASE_URL, TOKEN, free_port

START_TIMEOUT = 60.0


def server_cmd() -> list[str]:
    script = Path(sys.executable).with_name("plivo-tracker")
    if script.exists():
        return [str(script), "serve"]
    found = shutil.which("plivo-tracker")
    return [found, "serve"] if found else [sys.executable, "-m", "plivo_tracker", "serve"]


class Server:
    """`plivo-tracker serve` as a subprocess, its output in a log file."""

    def __init__(self, tmp_path: Path, database_url: str, name: str, **extra_env: str) -> None:
        self.port = int(extra_env.get("PORT") or free_port())
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / f"{name}.log"
        env = dict(os.environ)
        env.update(
            DATABASE_URL=database_url,
            PUBLIC_BASE_URL=BASE_URL,
            PLIVO_AUTH_ID=AUTH_ID,
            PLIVO_AUTH_TOKEN=TOKEN,
            HOST="127.0.0.1",
            PORT=str(self.port),
            SPOOL_DIR=str(tmp_path / "spool"),
            LOG_LEVEL="warning",
            LOG_FORMAT="json",
            RESEND_ERROR_CODES="none",  # the messages a test counts are its own
            # Credentials are set, so keys are required; tests poll as fast as they like.
            API_KEYS=API_KEY,
            RATE_LIMIT_API="100000/minute",
            WORKERS="1",  # one process unless a test asks for more (default: one per core)
        )
        env.update(extra_env)
        self._log: IO[bytes] = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            server_cmd(), cwd=tmp_path, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                if httpx.get(self.base + "/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        pytest.fail(f"server not healthy after {START_TIMEOUT}s:\n{self.log_text()}")

    def wait_ready(self) -> httpx.Response:
        """/ready until 200 with an empty spool (spooled callbacks are replayed every 2 s)."""
        deadline = time.monotonic() + 30.0
        resp = httpx.get(self.base + "/ready", timeout=5.0)
        while time.monotonic() < deadline:
            if resp.status_code == 200 and resp.json().get("spool_files") == 0:
                break
            time.sleep(0.5)
            resp = httpx.get(self.base + "/ready", timeout=5.0)
        return resp

    def stop(self, *, graceful: bool) -> None:
        try:
            if self.proc.poll() is None:
                if graceful:
                    self.proc.terminate()
                    try:
                        self.proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        self.proc.kill()
                else:
                    self.proc.kill()
            self.proc.wait(timeout=30)
        finally:
            self._log.close()


@contextlib.contextmanager
def simulator_process(tmp_path: Path, *args: str, token: str = TOKEN) -> Iterator[str]:
    """`plivo-tracker simulate` as its own process with `args` (its account's token: `token`);
    yields its base URL once it answers, and stops it afterwards."""
    port = free_port()
    env = {**os.environ, "PLIVO_AUTH_ID": AUTH_ID, "PLIVO_AUTH_TOKEN": token}
    log = (tmp_path / f"simulate-{port}.log").open("wb")
    proc = subprocess.Popen(
        [server_cmd()[0], "simulate", "--port", str(port), *args],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                httpx.get(base + "/_simulator/stats", timeout=1.0)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("the simulator did not start")
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


async def journal_position(url: str) -> tuple[int, int]:
    """(projector cursor, newest journal id) of the database at `url`."""
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(journal_repo.projection_state)
    finally:
        await engine.dispose()


def wait_projected(url: str, within: float = 180.0) -> tuple[int, int]:
    """Until the projector (of whichever server runs on `url`) has applied the whole journal:
    a callback's 200 means "journaled", its effect follows (docs/adr/0011)."""
    deadline = time.monotonic() + within
    cursor, head = asyncio.run(journal_position(url))
    while cursor < head:
        if time.monotonic() > deadline:
            pytest.fail(f"journal not applied: cursor {cursor} of {head}")
        time.sleep(0.2)
        cursor, head = asyncio.run(journal_position(url))
    return cursor, head
