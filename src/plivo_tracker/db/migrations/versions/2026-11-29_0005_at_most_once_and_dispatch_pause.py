"""At most once: Plivo's api_id per attempt, reconciliation lookups, the shared dispatch pause;
the sweeper: when each message was last looked up, the settled reason of messages without a
receipt, and leases (one sweeper at a time across processes).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 20:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import plivo_tracker.db.base  # noqa: F401  (custom column types)
from plivo_tracker.db.base import UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN on both dialects (no table rebuild on SQLite).
    op.add_column("send_attempts", sa.Column("api_id", sa.String(length=64), nullable=True))
    op.add_column("outbox", sa.Column("lookups", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("messages", sa.Column("settled_reason", sa.String(length=32), nullable=True))
    op.add_column("messages", sa.Column("swept_at", UTCDateTime(), nullable=True))
    op.add_column("messages", sa.Column("send_options", sa.Text(), nullable=True))
    # A message is resent at most once (its resend points at it): unique, so that two processes
    # applying the same failure cannot both resend it (NULLs, the originals, do not collide).
    op.drop_index("ix_messages_attempt_of", table_name="messages")
    op.create_index("ix_messages_attempt_of", "messages", ["attempt_of"], unique=True)
    op.create_index(
        "ix_messages_settled_reason_created_at",
        "messages",
        ["settled_reason", "created_at"],
        unique=False,
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("until", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )
    op.create_table(
        "dispatch_state",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("paused", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("paused_by", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("since", UTCDateTime(), nullable=True),
        sa.Column("next_probe_at", UTCDateTime(), nullable=True),
        sa.Column("probes", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_dispatch_state")),
    )


def downgrade() -> None:
    op.drop_table("dispatch_state")
    op.drop_table("leases")
    op.drop_index("ix_messages_settled_reason_created_at", table_name="messages")
    op.drop_index("ix_messages_attempt_of", table_name="messages")
    op.create_index("ix_messages_attempt_of", "messages", ["attempt_of"], unique=False)
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("send_options")
        batch_op.drop_column("swept_at")
        batch_op.drop_column("settled_reason")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("lookups")
    with op.batch_alter_table("send_attempts", schema=None) as batch_op:
        batch_op.drop_column("api_id")
