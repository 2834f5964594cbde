"""Inbound messages (issue 13): Plivo's extra fields of a message sent to one of our numbers,
and an index for listing messages by direction.

An inbound message is a row of `messages` (direction "inbound", origin "inbound", status
"received"); `inbound` holds, as JSON, what Plivo sent that has no column of its own
(PowerpackUUID, MessageIntent, the media with their content types). Existing rows are all
outbound: nothing to back-fill.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN on both: a batch rebuild of `messages` would drop its rollup triggers.
    op.add_column("messages", sa.Column("inbound", sa.Text(), nullable=True))
    op.create_index("ix_messages_direction_id", "messages", ["direction", "id"])


def downgrade() -> None:
    op.drop_index("ix_messages_direction_id", table_name="messages")
    # Plain DROP COLUMN (SQLite ≥ 3.35), for the same reason.
    op.execute("ALTER TABLE messages DROP COLUMN inbound")
