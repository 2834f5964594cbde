"""Fixtures shared by the end-to-end tests (real server processes)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DATABASES, create_database, drop_database


@pytest.fixture(params=DATABASES)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database for server processes: a new SQLite file (the server migrates it), or a
    new PostgreSQL or MariaDB database migrated with `plivo-tracker db upgrade`, dropped
    afterwards."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'e2e.db'}"
        return
    url = create_database(request.param, f"plivo_tracker_e2e_{os.getpid()}_{time.time_ns()}")
    try:
        subprocess.run(
            [sys.executable, "-m", "plivo_tracker", "db", "upgrade"],
            env={**os.environ, "DATABASE_URL": url},
            cwd=tmp_path,
            check=True,
            capture_output=True,
            timeout=120,
        )
        yield url
    finally:
        drop_database(url)


@pytest.fixture
def live_simulator_process(tmp_path: Path) -> Iterator[str]:
    """`plivo-tracker simulate` as its own process (no callbacks); yields its base URL."""
    from tests.e2e.server import simulator_process

    with simulator_process(tmp_path, "--no-callbacks") as base:
        yield base
