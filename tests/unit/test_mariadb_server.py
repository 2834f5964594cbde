"""Which MySQL-family servers the service accepts (db/dialect.mariadb_server_problem)."""

from __future__ import annotations

import pytest

from plivo_tracker.db.dialect import mariadb_server_problem


@pytest.mark.parametrize(
    "version", ["10.6.0-MariaDB", "10.11.19-MariaDB-0+deb12u1", "11.4.2-MariaDB-log"]
)
def test_mariadb_from_10_6_with_durable_commits_is_accepted(version: str) -> None:
    assert mariadb_server_problem(version, 1) is None


@pytest.mark.parametrize(
    ("version", "flush", "says"),
    [
        ("8.0.36", 1, "MySQL 8.0.36 is not supported"),
        ("8.4.0-0ubuntu", 1, "INSERT … RETURNING"),
        ("10.5.23-MariaDB", 1, "MariaDB 10.5 is too old"),
        ("10.3.39-MariaDB", 1, "10.6 or newer"),
        ("10.11.19-MariaDB", 2, "innodb_flush_log_at_trx_commit is 2"),
        ("10.11.19-MariaDB", 0, "an acknowledged callback can be lost"),
        ("x-MariaDB", 1, "cannot read the MariaDB version"),
    ],
)
def test_what_is_refused_and_why(version: str, flush: int, says: str) -> None:
    problem = mariadb_server_problem(version, flush)
    assert problem is not None
    assert says in problem
