"""Re-sends point at their original message (RESEND_ERROR_CODES).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 14:51:27.526187
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import plivo_tracker.db.base  # noqa: F401  (custom column types)

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN on both dialects (no table rebuild on SQLite).
    op.add_column("messages", sa.Column("attempt_of", sa.BigInteger(), nullable=True))
    op.create_index("ix_messages_attempt_of", "messages", ["attempt_of"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_messages_attempt_of", table_name="messages")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("attempt_of")
