"""A message remembers whether its request asked for the transactional opt-out exemption, so the
dispatcher can check opt-outs again when it sends (a STOP that arrived while it was queued).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "messages",
        sa.Column("transactional", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.execute("ALTER TABLE messages DROP COLUMN transactional")
