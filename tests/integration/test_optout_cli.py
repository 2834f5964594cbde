"""`plivo-tracker optout list|add|remove|import` on SQLite and PostgreSQL (on DATABASE_URL
directly, like `dispatch pause`)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from plivo_tracker import cli
from plivo_tracker.db.engine import make_engine
from plivo_tracker.optouts.models import opt_out_events, opt_outs


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db_url: str) -> CliRunner:
    monkeypatch.chdir(tmp_path)  # no .env from the working tree
    for name in ("PLIVO_AUTH_ID", "PLIVO_AUTH_TOKEN", "API_KEYS", "PUBLIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("SPOOL_DIR", str(tmp_path / "spool"))
    return CliRunner()


def _rows(db_url: str, table: Any) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        engine = make_engine(db_url)
        try:
            async with engine.connect() as conn:
                order = table.c.id if "id" in table.c else table.c.number
                result = await conn.execute(select(table).order_by(order))
                return [dict(r) for r in result.mappings()]
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_add_list_remove(cli_env: CliRunner, db_url: str) -> None:
    added = cli_env.invoke(cli.app, ["optout", "add", "+1 415 555 0101", "--note", "by phone"])
    assert added.exit_code == 0, added.output
    assert "+14155550101: opted out" in added.output
    again = cli_env.invoke(cli.app, ["optout", "add", "14155550101"])
    assert "had already opted out" in again.output
    cli_env.invoke(cli.app, ["optout", "add", "+14155550100"])

    listed = cli_env.invoke(cli.app, ["optout", "list"])
    assert listed.exit_code == 0, listed.output
    assert listed.output.index("+14155550100") < listed.output.index("+14155550101")
    assert "by phone" in listed.output
    assert "2 opted out" in listed.output
    as_json = cli_env.invoke(cli.app, ["optout", "list", "--json"])
    lines = [json.loads(line) for line in as_json.output.splitlines()]
    assert [(r["number"], r["source"], r["note"]) for r in lines] == [
        ("+14155550100", "cli", None),
        ("+14155550101", "cli", "by phone"),
    ]

    removed = cli_env.invoke(cli.app, ["optout", "remove", "+14155550101"])
    assert "+14155550101: opted back in" in removed.output
    assert (
        "had not opted out" in cli_env.invoke(cli.app, ["optout", "remove", "+14155550101"]).output
    )
    assert [r["number"] for r in _rows(db_url, opt_outs)] == ["+14155550100"]
    events = [(e["number"], e["action"], e["source"]) for e in _rows(db_url, opt_out_events)]
    assert events == [
        ("+14155550101", "opt_out", "cli"),
        ("+14155550100", "opt_out", "cli"),
        ("+14155550101", "opt_in", "cli"),
    ]


def test_a_bad_number_is_one_line_and_changes_nothing(cli_env: CliRunner, db_url: str) -> None:
    for command in ("add", "remove"):
        result = cli_env.invoke(cli.app, ["optout", command, "12345"])
        assert result.exit_code == 2
        assert "NUMBER" in result.output
        assert result.output.strip().count("\n") == 0
    assert _rows(db_url, opt_out_events) == []


def test_import_is_all_or_nothing_and_idempotent(
    cli_env: CliRunner, db_url: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "phone,note\n+14155550101,old list\nnot-a-number,x\n+14155550102,\n12,\n", "utf-8"
    )
    refused = cli_env.invoke(cli.app, ["optout", "import", str(bad)])
    assert refused.exit_code == 1
    assert "line 3: 'not-a-number' is not a phone number" in refused.output
    assert "line 5: '12'" in refused.output
    assert "2 bad row(s)" in refused.output
    assert "nothing imported" in refused.output
    assert _rows(db_url, opt_outs) == []

    good = tmp_path / "good.csv"
    good.write_text(
        "number,note,opted_out_at\n"
        "+14155550101,old list,2024-05-01T09:30:00+02:00\n"
        "+14155550102,,\n"
        "+14155550102,,\n",
        "utf-8",
    )
    cli_env.invoke(cli.app, ["optout", "add", "+14155550102"])
    first = cli_env.invoke(cli.app, ["optout", "import", str(good)])
    assert first.exit_code == 0, first.output
    assert "imported 1 opt-outs, 2 already opted out" in first.output
    second = cli_env.invoke(cli.app, ["optout", "import", str(good)])
    assert "imported 0 opt-outs, 3 already opted out" in second.output
    rows = {r["number"]: r for r in _rows(db_url, opt_outs)}
    assert rows["+14155550101"]["source"] == "import"
    assert rows["+14155550101"]["note"] == "old list"
    assert rows["+14155550101"]["opted_out_at"].isoformat() == "2024-05-01T07:30:00+00:00"
    assert rows["+14155550102"]["source"] == "cli"  # already there: left as it was
    assert [e["source"] for e in _rows(db_url, opt_out_events)] == ["cli", "import"]


def test_import_of_a_missing_file(cli_env: CliRunner, tmp_path: Path) -> None:
    result = cli_env.invoke(cli.app, ["optout", "import", str(tmp_path / "none.csv")])
    assert result.exit_code == 1
    assert "cannot read" in result.output
