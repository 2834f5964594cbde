"""Retention: indexes that find old nonces, idempotency keys and quarantine rows; when a
message's text was erased (STORE_MESSAGE_TEXT=false); and purges that leave the statistics alone:
the delete triggers of the rollups (migration 0004) skip their un-counting while the deleting
transaction holds a row in `purge_marker`, which only a purge inserts (and deletes again before
it commits, so no other transaction ever sees it).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 10:00:00
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

import plivo_tracker.db.base  # noqa: F401  (custom column types)
from plivo_tracker.db.base import UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# While this transaction holds a row here, deleting messages leaves the rollups alone.
PURGING = "EXISTS (SELECT 1 FROM purge_marker)"


def _rollups() -> ModuleType:
    """Migration 0004, where the rollup triggers are generated: they are rebuilt from the same
    code, so the SQL of a rollup is written once."""
    path = next(Path(__file__).parent.glob("*_0004_*.py"))
    spec = importlib.util.spec_from_file_location("plivo_tracker_migration_0004", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    op.add_column("messages", sa.Column("content_erased_at", UTCDateTime(), nullable=True))
    op.create_index("ix_callback_nonces_received_at", "callback_nonces", ["received_at"])
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])
    op.create_index("ix_quarantine_received_at", "quarantine", ["received_at"])
    op.create_table(
        "purge_marker",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_purge_marker")),
    )
    _delete_triggers(skip_while_purging=True)


def downgrade() -> None:
    _delete_triggers(skip_while_purging=False)
    op.drop_table("purge_marker")
    op.drop_index("ix_quarantine_received_at", table_name="quarantine")
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    op.drop_index("ix_callback_nonces_received_at", table_name="callback_nonces")
    # Plain DROP COLUMN on both (SQLite ≥ 3.35): a batch rebuild of `messages` would drop its
    # rollup triggers with the old table.
    op.execute("ALTER TABLE messages DROP COLUMN content_erased_at")


def _delete_triggers(*, skip_while_purging: bool) -> None:
    """Re-create what un-counts a deleted message: SQLite's `…_del` row triggers (their WHEN
    gains the marker), PostgreSQL's statement trigger function (it returns at once)."""
    v4 = _rollups()
    if op.get_context().dialect.name == "postgresql":
        body = v4._pg_apply("SELECT -1 AS sign, * FROM old_rows") + ";"
        guard = (
            f"IF {PURGING} THEN\n        RETURN NULL;\n    END IF;\n    "
            if skip_while_purging
            else ""
        )
        op.execute(
            "CREATE OR REPLACE FUNCTION stats_rollup_delete() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            f"BEGIN\n    {guard}{body}\n    RETURN NULL;\nEND\n$$"
        )
        return
    if op.get_context().dialect.name != "sqlite":
        return  # MariaDB: no triggers (see 0004)
    for i, rollup in enumerate(v4._ROLLUPS):
        name = f"trg_{rollup.table}_{i}_del"
        when = rollup.include.format(r="OLD")
        if skip_while_purging:
            when = f"({when}) AND NOT {PURGING}"
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute(
            f"CREATE TRIGGER {name} AFTER DELETE ON messages WHEN {when} "
            f"BEGIN {v4._sqlite_upsert(rollup, 'OLD', '-')} END"
        )
