"""The statistics rollups are kept by the projector (messages/rollups.py), no longer by triggers
on `messages`: every status change now passes through the projector (docs/adr/0011), which
adds one pass's net differences in one upsert per table. The triggers (migration 0004), their
PostgreSQL functions and the purge's marker table (0006: it only told the delete triggers to
leave the rollups alone) go. The rollup tables and their counts stay as they are.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 14:00:00
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _migration(number: str) -> ModuleType:
    """An earlier migration, where the triggers are generated (so their SQL is written once)."""
    path = next(Path(__file__).parent.glob(f"*_{number}_*.py"))
    spec = importlib.util.spec_from_file_location(f"plivo_tracker_migration_{number}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    v4 = _migration("0004")
    if op.get_context().dialect.name == "postgresql":
        for event in ("insert", "update", "delete", "truncate"):
            op.execute(f"DROP TRIGGER IF EXISTS trg_stats_rollup_{event} ON messages")
            op.execute(f"DROP FUNCTION IF EXISTS stats_rollup_{event}()")
    elif op.get_context().dialect.name == "sqlite":
        for name, _ in v4._sqlite_triggers():
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("purge_marker")


def downgrade() -> None:
    v4 = _migration("0004")
    if op.get_context().dialect.name == "postgresql":
        for sql in [*v4._pg_functions(), *v4._pg_triggers()]:
            op.execute(sql)
    elif op.get_context().dialect.name == "sqlite":
        for _, sql in v4._sqlite_triggers():
            op.execute(sql)
    op.create_table(
        "purge_marker",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_purge_marker")),
    )
    _migration("0006")._delete_triggers(skip_while_purging=True)
