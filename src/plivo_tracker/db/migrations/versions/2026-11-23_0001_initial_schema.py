"""Initial schema: messages, parts, status events, nonces, quarantine.

Revision ID: 0001
Revises:
Create Date: 2026-11-23 12:44:43.458279
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import plivo_tracker.db.base

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "callback_nonces",
        sa.Column("nonce", sa.String(length=128), nullable=False),
        sa.Column("received_at", plivo_tracker.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("nonce", name=op.f("pk_callback_nonces")),
    )
    op.create_table(
        "messages",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("message_uuid", sa.String(length=64), nullable=True),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("direction", sa.String(length=16), server_default="outbound", nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_sequence", sa.Integer(), nullable=True),
        sa.Column("status_at", plivo_tracker.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("error_code", sa.String(length=16), nullable=True),
        sa.Column("to_number", sa.String(length=64), nullable=True),
        sa.Column("from_number", sa.String(length=64), nullable=True),
        sa.Column("type", sa.String(length=8), nullable=True),
        sa.Column("units", sa.Integer(), nullable=True),
        sa.Column("total_rate", sa.String(length=32), nullable=True),
        sa.Column("total_amount", sa.String(length=32), nullable=True),
        sa.Column("mcc", sa.String(length=8), nullable=True),
        sa.Column("mnc", sa.String(length=8), nullable=True),
        sa.Column("part_count", sa.Integer(), nullable=True),
        sa.Column("has_conflict", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", plivo_tracker.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", plivo_tracker.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", plivo_tracker.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", plivo_tracker.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint("message_uuid", name=op.f("uq_messages_message_uuid")),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index("ix_messages_created_at", ["created_at"], unique=False)
        batch_op.create_index("ix_messages_status", ["status"], unique=False)

    op.create_table(
        "quarantine",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("received_at", plivo_tracker.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("path", sa.String(length=200), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("query", sa.Text(), nullable=True),
        sa.Column("headers", sa.Text(), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("reason", sa.String(length=300), nullable=False),
        sa.Column("nonce", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quarantine")),
    )
    op.create_table(
        "message_parts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("part_uuid", sa.String(length=64), nullable=False),
        sa.Column("part_info", sa.String(length=32), nullable=True),
        sa.Column("part_index", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_sequence", sa.Integer(), nullable=True),
        sa.Column("status_at", plivo_tracker.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("error_code", sa.String(length=16), nullable=True),
        sa.Column("updated_at", plivo_tracker.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_message_parts_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_parts")),
        sa.UniqueConstraint("part_uuid", name=op.f("uq_message_parts_part_uuid")),
    )
    with op.batch_alter_table("message_parts", schema=None) as batch_op:
        batch_op.create_index("ix_message_parts_message_id", ["message_id"], unique=False)

    op.create_table(
        "status_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("message_uuid", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("previous_status", sa.String(length=16), nullable=True),
        sa.Column("sequence", sa.Integer(), nullable=True),
        sa.Column("error_code", sa.String(length=16), nullable=True),
        sa.Column("effect", sa.String(length=16), nullable=False),
        sa.Column("dedupe_key", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("nonce", sa.String(length=128), nullable=True),
        sa.Column("signature_scheme", sa.String(length=8), nullable=True),
        sa.Column("method", sa.String(length=8), nullable=True),
        sa.Column("plivo_time", plivo_tracker.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("received_at", plivo_tracker.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("headers", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_status_events_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_status_events")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_status_events_dedupe_key")),
    )
    with op.batch_alter_table("status_events", schema=None) as batch_op:
        batch_op.create_index("ix_status_events_message_id_id", ["message_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("status_events", schema=None) as batch_op:
        batch_op.drop_index("ix_status_events_message_id_id")

    op.drop_table("status_events")
    with op.batch_alter_table("message_parts", schema=None) as batch_op:
        batch_op.drop_index("ix_message_parts_message_id")

    op.drop_table("message_parts")
    op.drop_table("quarantine")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_status")
        batch_op.drop_index("ix_messages_created_at")

    op.drop_table("messages")
    op.drop_table("callback_nonces")
