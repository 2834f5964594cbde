"""`plivo-tracker purge` on its arguments: bad ages are refused with one line and exit 2 before
anything is touched (the database here does not even exist)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from plivo_tracker.cli import app


@pytest.mark.parametrize("age", ["-3d", "0d", "abc", "12x", "1.5h", "", "99999999d"])
def test_bad_ages_exit_2_with_one_line(tmp_path: Path, age: str) -> None:
    db = tmp_path / "absent" / "never.db"
    result = CliRunner().invoke(
        app,
        ["purge", "--older-than", age],
        env={"DATABASE_URL": f"sqlite+aiosqlite:///{db}", "COLUMNS": "200"},
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "--older-than" in lines[0]
    assert not db.parent.exists()  # refused before opening any database


def test_bad_setting_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["purge", "--dry-run"],
        env={"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db", "RETENTION_DAYS": "0"},
    )
    assert result.exit_code == 2
    assert "RETENTION_DAYS" in result.output
