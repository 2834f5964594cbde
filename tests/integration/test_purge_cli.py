"""`plivo-tracker purge` against real SQLite and PostgreSQL: counts per table, a dry run that
deletes nothing, and bad input that deletes nothing either."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection
from typer.testing import CliRunner

from plivo_tracker.cli import app
from plivo_tracker.db.engine import make_engine
from tests.old_data import (
    add_idempotency_key,
    add_message,
    add_nonce,
    add_quarantine,
    row_counts,
    utcnow,
)

OLD = timedelta(days=120)


def _on(db_url: str, fn: Any, write: bool = False) -> Any:
    async def go() -> Any:
        engine = make_engine(db_url)
        try:
            async with engine.begin() if write else engine.connect() as conn:
                return await conn.run_sync(fn)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def _fill(conn: Connection) -> None:
    now = utcnow()
    for _ in range(4):
        add_message(conn, now, OLD, "delivered", parts=1)
    add_message(conn, now, OLD, "queued")
    add_message(conn, now, timedelta(days=3), "delivered")
    for age in (OLD, timedelta(hours=2)):
        add_nonce(conn, now, age)
        add_idempotency_key(conn, now, age)
        add_quarantine(conn, now, age)
    add_message(conn, now, timedelta(0), "queued")  # the newest: ids never go backwards


def _purge(db_url: str, *args: str) -> Any:
    return CliRunner().invoke(app, ["purge", *args], env={"DATABASE_URL": db_url, "COLUMNS": "200"})


def _printed(output: str) -> dict[str, int]:
    """table → count, from the printed table."""
    found = re.findall(r"^\s*(\w+)\s+│\s+([\d,]+)\s+│", output, re.MULTILINE)
    return {name: int(n.replace(",", "")) for name, n in found}


def test_dry_run_prints_counts_and_deletes_nothing_then_purge_deletes_them(db_url: str) -> None:
    _on(db_url, _fill, write=True)
    before = _on(db_url, row_counts)

    dry = _purge(db_url, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "nothing deleted" in dry.output
    would = _printed(dry.output)
    assert _on(db_url, row_counts) == before
    assert would["messages"] == 4
    assert would["status_events"] == 12
    assert would["message_parts"] == 4
    assert would["callback_nonces"] == would["idempotency_keys"] == would["quarantine"] == 1
    assert "1 older messages kept" in dry.output

    done = _purge(db_url)
    assert done.exit_code == 0, done.output
    assert _printed(done.output) == would
    after = _on(db_url, row_counts)
    assert {t: before[t] - after[t] for t in before} == would


@pytest.mark.parametrize("age", ["-3d", "0d", "abc"])
def test_bad_input_deletes_nothing(db_url: str, age: str) -> None:
    _on(db_url, _fill, write=True)
    before = _on(db_url, row_counts)
    result = _purge(db_url, "--older-than", age)
    assert result.exit_code == 2
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1
    assert _on(db_url, row_counts) == before


def test_older_than_overrides_the_retention(db_url: str) -> None:
    _on(db_url, _fill, write=True)
    result = _purge(db_url, "--older-than", "2d")
    assert result.exit_code == 0, result.output
    counts = _printed(result.output)
    assert counts["messages"] == 5  # the 3-day-old one too; the queued ones never
    assert counts["quarantine"] == 1
