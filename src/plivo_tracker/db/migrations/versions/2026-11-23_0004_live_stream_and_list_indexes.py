"""Live stream and list: each event records the message's status after it; list indexes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 15:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import plivo_tracker.db.base  # noqa: F401  (custom column types)

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("status_events", sa.Column("message_status", sa.String(16), nullable=True))
    # Events stored before: a change moved the message to the event's status; anything else
    # left it where it was.
    op.execute(
        "UPDATE status_events SET message_status = CASE WHEN effect IN ('applied', "
        "'conflict_won') THEN status ELSE previous_status END"
    )
    op.drop_index("ix_messages_status", table_name="messages")
    op.create_index("ix_messages_status_id", "messages", ["status", "id"])
    op.create_index("ix_messages_to_number_id", "messages", ["to_number", "id"])
    op.create_index("ix_messages_from_number_id", "messages", ["from_number", "id"])


def downgrade() -> None:
    op.drop_index("ix_messages_from_number_id", table_name="messages")
    op.drop_index("ix_messages_to_number_id", table_name="messages")
    op.drop_index("ix_messages_status_id", table_name="messages")
    op.create_index("ix_messages_status", "messages", ["status"])
    with op.batch_alter_table("status_events", schema=None) as batch_op:
        batch_op.drop_column("message_status")
