"""Opt-outs with real processes on SQLite and PostgreSQL: `optout add` on the database, then
`send` through a running server is refused for that number (also with --transactional, which
the operator has not enabled), over HTTP the opt-out shows; `optout remove`, and the same send
is accepted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import API_KEY, free_port
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


def test_cli_optout_then_send_refused_then_allowed(tmp_path: Path, database: str) -> None:
    port = free_port()
    server = Server(
        tmp_path,
        database,
        "optouts",
        PORT=str(port),
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        PLIVO_AUTH_ID="",
        PLIVO_AUTH_TOKEN="",
    )
    db = {"DATABASE_URL": database}
    try:
        server.wait_healthy()
        added = _cli("optout", "add", "+14155550161", "--note", "e2e", cwd=tmp_path, **db)
        assert added.returncode == 0, added.stderr
        headers = {"X-API-Key": API_KEY}
        shown = httpx.get(f"{server.base}/api/opt-outs/%2B14155550161", headers=headers).json()
        assert (shown["opted_out"], shown["source"], shown["note"]) == (True, "cli", "e2e")

        args = ["send", "--to", "+14155550160", "--to", "+14155550161", "--text", "hi"]
        for extra in ([], ["--transactional"]):
            refused = _cli(*args, *extra, "--server", server.base, cwd=tmp_path)
            assert refused.returncode == 1, refused.stdout
            assert "+14155550161" in refused.stderr
            assert "opted out" in refused.stderr
            assert refused.stderr.strip().count("\n") == 0
        listed = httpx.get(f"{server.base}/api/messages", headers=headers).json()
        assert listed["messages"] == []  # nothing stored, for either recipient

        removed = _cli("optout", "remove", "+14155550161", cwd=tmp_path, **db)
        assert removed.returncode == 0, removed.stderr
        sent = _cli(*args, "--server", server.base, cwd=tmp_path)
        assert sent.returncode == 0, sent.stderr
        assert [line.split()[1:] for line in sent.stdout.splitlines()] == [
            ["+14155550160", "accepted"],
            ["+14155550161", "accepted"],
        ]
        listed = httpx.get(f"{server.base}/api/messages", headers=headers).json()
        assert sorted(m["to"] for m in listed["messages"]) == ["+14155550160", "+14155550161"]
    finally:
        server.stop(graceful=True)
