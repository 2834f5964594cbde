"""Tables: messages, their parts, the status-event history, seen nonces and the quarantine.

Plain SQLAlchemy Core tables: the hot path inserts batches with Core statements, and reads map
rows to small dataclasses, so an ORM session would only add overhead.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    false,
)

from plivo_tracker.db.base import BigIntPK, UTCDateTime, metadata

messages = Table(
    "messages",
    metadata,
    Column("id", BigIntPK, primary_key=True, autoincrement=True),
    # Null until Plivo answers the send; unique so a callback and a send meet on one row.
    Column("message_uuid", String(64), unique=True),
    # "api": created by a send; "callback": placeholder for a UUID first seen in a callback.
    Column("origin", String(16), nullable=False),
    Column("direction", String(16), nullable=False, server_default="outbound"),
    Column("status", String(16), nullable=False),
    Column("status_sequence", Integer),
    Column("status_at", UTCDateTime()),
    Column("error_code", String(16)),
    Column("to_number", String(64)),
    Column("from_number", String(64)),
    Column("type", String(8)),
    Column("units", Integer),
    Column("total_rate", String(32)),
    Column("total_amount", String(32)),
    Column("mcc", String(8)),
    Column("mnc", String(8)),
    Column("part_count", Integer),  # expected parts, from PartInfo "k of n"
    Column("has_conflict", Boolean, nullable=False, server_default=false()),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("sent_at", UTCDateTime()),
    Column("delivered_at", UTCDateTime()),
)
Index("ix_messages_status", messages.c.status)
Index("ix_messages_created_at", messages.c.created_at)

message_parts = Table(
    "message_parts",
    metadata,
    Column("id", BigIntPK, primary_key=True, autoincrement=True),
    Column("message_id", ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("part_uuid", String(64), nullable=False, unique=True),
    Column("part_info", String(32)),
    Column("part_index", Integer),
    Column("status", String(16), nullable=False),
    Column("status_sequence", Integer),
    Column("status_at", UTCDateTime()),
    Column("error_code", String(16)),
    Column("updated_at", UTCDateTime(), nullable=False),
)
Index("ix_message_parts_message_id", message_parts.c.message_id)

status_events = Table(
    "status_events",
    metadata,
    # The event id: the cursor of the live stream (ascending in commit order on SQLite).
    Column("id", BigIntPK, primary_key=True, autoincrement=True),
    Column("message_id", ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("message_uuid", String(64)),  # the UUID the callback carried (a part's own UUID)
    Column("status", String(16), nullable=False),
    Column("previous_status", String(16)),
    Column("sequence", Integer),
    Column("error_code", String(16)),
    Column("effect", String(16), nullable=False),
    # (MessageUUID, Status, Sequence), or a payload hash without Sequence: duplicates stop here.
    Column("dedupe_key", String(200), nullable=False, unique=True),
    Column("source", String(16), nullable=False),  # callback | poll | local
    Column("nonce", String(128)),
    Column("signature_scheme", String(8)),
    Column("method", String(8)),
    Column("plivo_time", UTCDateTime()),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("payload", Text, nullable=False),  # JSON: every field as received
    Column("headers", Text),  # JSON: the Plivo signature headers and content type
)
Index("ix_status_events_message_id_id", status_events.c.message_id, status_events.c.id)

# Verified nonces, committed with their event: a replayed request is answered 200 and ignored.
callback_nonces = Table(
    "callback_nonces",
    metadata,
    Column("nonce", String(128), primary_key=True),
    Column("received_at", UTCDateTime(), nullable=False),
)

# Validly signed payloads we could not interpret: kept raw, acknowledged, never dropped.
quarantine = Table(
    "quarantine",
    metadata,
    Column("id", BigIntPK, primary_key=True, autoincrement=True),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("path", String(200), nullable=False),
    Column("method", String(8), nullable=False),
    Column("query", Text),
    Column("headers", Text),
    Column("body", LargeBinary),
    Column("reason", String(300), nullable=False),
    Column("nonce", String(128)),
)
