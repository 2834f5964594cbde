"""Opt-outs: the list of numbers that opted out, and the history of every change.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import plivo_tracker.db.base  # noqa: F401  (custom column types)
from plivo_tracker.db.base import BigIntPK, UTCDateTime

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "opt_outs",
        sa.Column("number", sa.String(length=64), nullable=False),
        sa.Column("opted_out_at", UTCDateTime(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("keyword", sa.String(length=32), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("number", name=op.f("pk_opt_outs")),
    )
    op.create_table(
        "opt_out_events",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("number", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("keyword", sa.String(length=32), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_opt_out_events")),
    )
    op.create_index("ix_opt_out_events_number_id", "opt_out_events", ["number", "id"])
    op.create_index("ix_opt_out_events_message_id", "opt_out_events", ["message_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_opt_out_events_message_id", table_name="opt_out_events")
    op.drop_index("ix_opt_out_events_number_id", table_name="opt_out_events")
    op.drop_table("opt_out_events")
    op.drop_table("opt_outs")
