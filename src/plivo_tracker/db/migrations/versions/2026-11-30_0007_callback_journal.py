"""The callback journal and the projector's cursor (docs/adr/0011).

The cursor starts at 0 with an empty journal: everything stored before this revision was
already applied by the request that stored it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import plivo_tracker.db.base  # noqa: F401  (custom column types)
from plivo_tracker.db.base import BigIntPK, UTCDateTime

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "journal",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=True),
        sa.Column("dedupe_key", sa.String(length=200), nullable=False),
        sa.Column("message_key", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("nonce", sa.String(length=128), nullable=True),
        sa.Column("signature_scheme", sa.String(length=8), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("headers", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journal")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_journal_dedupe_key")),
    )
    op.create_index("ix_journal_received_at", "journal", ["received_at"])
    op.create_table(
        "cursors",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("position", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_cursors")),
    )
    op.bulk_insert(
        sa.table("cursors", sa.column("name", sa.String), sa.column("position", sa.BigInteger)),
        [{"name": "projector", "position": 0}],
    )


def downgrade() -> None:
    op.drop_table("cursors")
    op.drop_index("ix_journal_received_at", table_name="journal")
    op.drop_table("journal")
