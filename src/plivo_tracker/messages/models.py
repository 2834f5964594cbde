"""Tables: messages, their parts, the status-event history, seen nonces and the quarantine.

Plain SQLAlchemy Core tables: the hot path inserts batches with Core statements, and reads map
rows to small dataclasses, so an ORM session would only add overhead.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
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
    # "api": created by a send; "callback": placeholder for a UUID first seen in a callback;
    # "inbound": a message sent to one of our numbers (/plivo/inbound).
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
    # What we were asked to send (messages we send ourselves; null for callback-only ones).
    Column("text", Text),
    Column("media_urls", Text),  # JSON list
    Column("encoding", String(8)),  # GSM-7 | UCS-2
    Column("segments", Integer),
    Column("error_detail", Text),  # why a send failed on our side (e.g. Plivo's 400 text)
    # Why a message without a final status counts as settled ("no_receipt": Plivo still says
    # `sent` long after; the sweeper sets it), else NULL.
    Column("settled_reason", String(32)),
    Column("swept_at", UTCDateTime()),  # when the sweeper last looked it up at Plivo
    Column("send_options", Text),  # JSON: Plivo send options given (message_expiry, log, ...)
    # A re-send (RESEND_ERROR_CODES) points at the message it repeats. No foreign key on
    # purpose: adding one makes SQLite rebuild the table, and dropping the old copy would
    # cascade-delete the event history.
    Column("attempt_of", BigInteger),
    # STORE_MESSAGE_TEXT=false: when `text` and `media_urls` were erased (sending no longer
    # needed them); NULL while they are kept.
    Column("content_erased_at", UTCDateTime()),
    # An inbound message (direction "inbound"): Plivo's fields without a column of their own,
    # JSON (powerpack_uuid, message_intent, media_count, media: [{url, content_type}]).
    Column("inbound", Text),
    # Ours: the request asked for the transactional opt-out exemption (checked again at send).
    Column("transactional", Boolean, nullable=False, server_default=false()),
)
Index("ix_messages_attempt_of", messages.c.attempt_of, unique=True)
Index("ix_messages_direction_id", messages.c.direction, messages.c.id)
Index("ix_messages_status_id", messages.c.status, messages.c.id)
Index("ix_messages_to_number_id", messages.c.to_number, messages.c.id)
Index("ix_messages_from_number_id", messages.c.from_number, messages.c.id)
Index("ix_messages_created_at", messages.c.created_at)
# Mostly NULL: the few "sent, no receipt" messages, counted by /api/stats.
Index("ix_messages_settled_reason_created_at", messages.c.settled_reason, messages.c.created_at)

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
    # The event id: the cursor of the live stream, ascending in commit order on both databases
    # (PostgreSQL: writers take an ordering lock first, see docs/adr/0006).
    Column("id", BigIntPK, primary_key=True, autoincrement=True),
    Column("message_id", ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("message_uuid", String(64)),  # the UUID the callback carried (a part's own UUID)
    Column("status", String(16), nullable=False),
    Column("previous_status", String(16)),  # the message's status before this event
    # The message's status after it (for a part: the roll-up). A change when it differs from
    # previous_status; changes are what WS /ws streams.
    Column("message_status", String(16)),
    Column("sequence", Integer),
    Column("error_code", String(16)),
    Column("effect", String(16), nullable=False),
    # (MessageUUID, Status, Sequence), or a payload hash without Sequence: duplicates stop here.
    Column("dedupe_key", String(200), nullable=False, unique=True),
    Column("source", String(16), nullable=False),  # callback | reconcile | local | inbound
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

Index("ix_callback_nonces_received_at", callback_nonces.c.received_at)  # the purge

# The callback journal: every acknowledged status report, appended by the request (one durable
# insert per callback, group-committed) and applied later, in id order, by the projector
# (docs/adr/0011). `dedupe_key` is unique: a second copy of a report (a Plivo retry under a new
# nonce) is refused by the insert itself. `payload` holds every field as received; the other
# columns are the parsed keys, for operators and the purge.
journal = Table(
    "journal",
    metadata,
    Column("id", BigIntPK, primary_key=True, autoincrement=True),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("source", String(16), nullable=False),  # callback | reconcile | inbound
    Column("method", String(8)),
    Column("dedupe_key", String(200), nullable=False, unique=True),
    Column("message_key", String(64), nullable=False),  # the parent's UUID for a part
    Column("status", String(16), nullable=False),
    Column("nonce", String(128)),
    Column("signature_scheme", String(8)),
    Column("payload", Text, nullable=False),  # JSON: every field as received
    Column("headers", Text),  # JSON: the kept headers
)
Index("ix_journal_received_at", journal.c.received_at)  # the purge

# Where a reader of the journal stands: the projector's cursor (the last journal id applied),
# moved in the transaction that applies the rows, and locked by it (one pass at a time).
cursors = Table(
    "cursors",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("position", BigInteger, nullable=False, server_default="0"),
    Column("updated_at", UTCDateTime()),
)

# MariaDB's transaction-scoped ordering locks (db/dialect.order_lock_sql): one row per kind of
# id that must ascend in commit order ("events", "journal"), locked FOR UPDATE until COMMIT.
# PostgreSQL uses advisory locks and SQLite its single writer; the rows exist everywhere so
# that every database has the same schema (`db copy` moves between them).
order_locks = Table(
    "order_locks",
    metadata,
    Column("name", String(32), primary_key=True),
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
Index("ix_quarantine_received_at", quarantine.c.received_at)  # the purge

# The outbox: one row per message to send; the dispatcher claims due rows under a lease.
outbox = Table(
    "outbox",
    metadata,
    Column("message_id", ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
    # pending → sending (leased) → done | failed | reconcile (ambiguous outcome, look it up:
    # reconciling while leased) → done (adopted) | pending (positively not found) | unknown
    # (undecidable: an operator adopts a UUID or resends; docs/adr/0008)
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("first_attempt_at", UTCDateTime()),
    Column("lease_owner", String(64)),
    Column("lease_until", UTCDateTime()),
    Column("last_error", Text),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("lookups", Integer, nullable=False, server_default="0"),  # reconciliation lookups
)
Index("ix_outbox_state_next_attempt_at", outbox.c.state, outbox.c.next_attempt_at)

# Every attempt to hand a message to Plivo, with its outcome (the attempt count comes from here).
send_attempts = Table(
    "send_attempts",
    metadata,
    Column("id", BigIntPK, primary_key=True, autoincrement=True),
    Column("message_id", ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime(), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("http_status", Integer),
    Column("detail", Text),
    Column("api_id", String(64)),  # Plivo's request id: what Plivo support asks for
)
Index("ix_send_attempts_message_id", send_attempts.c.message_id)

# Time-limited leadership: the process whose lease is current does the job (the sweeper).
leases = Table(
    "leases",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("owner", String(64)),
    Column("until", UTCDateTime()),
)

# Whether dispatching is paused, for every worker: one row. `paused_by` is "auto" (the Message
# API answered 401/403/404/405: probed on a backoff, resumes by itself) or "operator"
# (`plivo-tracker dispatch pause`: only `dispatch resume` ends it).
dispatch_state = Table(
    "dispatch_state",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("paused", Boolean, nullable=False, server_default=false()),
    Column("paused_by", String(16)),
    Column("reason", Text),
    Column("since", UTCDateTime()),
    Column("next_probe_at", UTCDateTime()),
    Column("probes", Integer, nullable=False, server_default="0"),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# Idempotency-Key of POST /api/messages: same key + same body → same answer, never a second send.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("response", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)
Index("ix_idempotency_keys_created_at", idempotency_keys.c.created_at)  # the purge

# Shared token bucket for PLIVO_MPS across dispatcher processes (PostgreSQL; locked per take).
rate_limits = Table(
    "rate_limits",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("updated", Float, nullable=False),  # epoch seconds
)

# ---- statistics rollups (GET /api/stats) ----------------------------------------------------
# Counts of the messages created in one block of `grain` minutes (1, 60 or 1440) starting at
# `minute` (minutes since 1970-01-01 UTC, a multiple of `grain`), kept by the projector
# (messages/rollups.py, which states the rules; triggers until migration 0010). Purging messages
# does not un-count them; rows whose counts fell to 0 stay and are ignored by reads.


def _rollup(name: str, *keys: Column[Any], counters: tuple[str, ...] = ("n",)) -> Table:
    return Table(
        name,
        metadata,
        Column("grain", Integer, primary_key=True, autoincrement=False),
        Column("minute", BigInteger, primary_key=True, autoincrement=False),
        *keys,
        *(Column(c, BigInteger, nullable=False) for c in counters),
        sqlite_with_rowid=False,
    )


stats_status = _rollup("stats_status", Column("status", String(16), primary_key=True))
# Only messages with an error code.
stats_errors = _rollup("stats_errors", Column("error_code", String(16), primary_key=True))
# Only messages with an MCC (a missing MNC is ''): all of them, the delivered ones, and the
# failed, undelivered or rejected ones.
stats_carriers = _rollup(
    "stats_carriers",
    Column("mcc", String(8), primary_key=True),
    Column("mnc", String(8), primary_key=True),
    counters=("total", "delivered", "failed"),
)
# Latency histogram of our own sends (origin 'api'): kind 'sent' | 'delivered', bucket_ms = the
# milliseconds from created_at to sent_at / delivered_at rounded down to 3 significant digits.
stats_latency = _rollup(
    "stats_latency",
    Column("kind", String(16), primary_key=True),
    Column("bucket_ms", BigInteger, primary_key=True, autoincrement=False),
)
