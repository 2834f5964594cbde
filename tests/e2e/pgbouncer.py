"""PgBouncer (Debian's package) in transaction mode, as a process of the test's own.

It listens on a free port on 127.0.0.1 and passes every database to the test PostgreSQL server
(`PLIVO_TRACKER_TEST_PG`'s host and port), trusting the user the tests connect as. Its ini file
and log live in the test's tmp_path. PgBouncer refuses to run as root: then it is started with
`-u nobody` (it reads its files first, then drops to that user). Missing: the test fails under
CI (scripts/test installs it) and is skipped elsewhere.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import PG_ADMIN_DSN, free_port

START_TIMEOUT = 10.0


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None
    )
    if found is None:
        message = "pgbouncer is not installed (apt-get install pgbouncer)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: required under CI")
        pytest.skip(message)
    return found


@dataclass(frozen=True, slots=True)
class PgBouncer:
    port: int
    log_path: Path

    def url(self, direct_url: str) -> str:
        """The same database as `direct_url`, through this PgBouncer."""
        return (
            make_url(direct_url)
            .set(host="127.0.0.1", port=self.port)
            .render_as_string(hide_password=False)
        )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def run_pgbouncer(tmp_path: Path, *, pool_size: int = 5) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode with `pool_size` server connections per database/user
    (fewer than the clients: server connections are shared between them, as in production)."""
    binary = pgbouncer_binary()
    target = urlsplit(PG_ADMIN_DSN)
    user = target.username or getpass.getuser()
    work = tmp_path / "pgbouncer"
    work.mkdir()
    port = free_port()
    (work / "userlist.txt").write_text(f'"{user}" ""\n')
    ini = work / "pgbouncer.ini"
    ini.write_text(
        "[databases]\n"
        f"* = host={target.hostname or '127.0.0.1'} port={target.port or 5432}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {work / 'userlist.txt'}\n"
        "pool_mode = transaction\n"
        f"default_pool_size = {pool_size}\n"
        "max_client_conn = 500\n"
        # asyncpg sends none of these unless asked; psql and others do.
        "ignore_startup_parameters = extra_float_digits\n"
        "logfile =\n"
        "pidfile =\n"
    )
    log_path = work / "pgbouncer.log"
    cmd = [binary, str(ini)]
    if os.geteuid() == 0:  # "PgBouncer should not run as root"
        cmd[1:1] = ["-u", "nobody"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"pgbouncer did not start:\n{log_path.read_text()}")
                time.sleep(0.05)
        yield PgBouncer(port, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
