"""Tables: the opt-out list and the history of every change to it (migration 0009).

Neither table has a foreign key to `messages`: the retention purge deletes old messages, and an
opt-out, with the record of why and when it was made, must outlive the message that caused it
(`message_id` then names a message that is gone). The purge never touches these tables.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, String, Table, Text

from plivo_tracker.db.base import BigIntPK, UTCDateTime, metadata

# One row per number that has opted out (E.164 with "+"); opting back in deletes the row.
opt_outs = Table(
    "opt_outs",
    metadata,
    Column("number", String(64), primary_key=True),
    Column("opted_out_at", UTCDateTime(), nullable=False),
    Column("source", String(16), nullable=False),  # keyword | api | cli | import
    Column("message_id", BigInteger),  # the inbound message that said the keyword
    Column("keyword", String(32)),  # normalised (STOP), for a keyword
    Column("note", Text),  # an operator's note (API, CLI, import)
)

# Every change, and every HELP: `action` opt_out | opt_in | help. A message causes at most one
# event (`message_id` unique): applying the same inbound message twice changes nothing.
opt_out_events = Table(
    "opt_out_events",
    metadata,
    Column("id", BigIntPK, primary_key=True, autoincrement=True),
    Column("number", String(64), nullable=False),
    Column("action", String(16), nullable=False),
    Column("source", String(16), nullable=False),
    Column("message_id", BigInteger),
    Column("keyword", String(32)),
    Column("note", Text),
    Column("at", UTCDateTime(), nullable=False),
)
Index("ix_opt_out_events_number_id", opt_out_events.c.number, opt_out_events.c.id)
Index("ix_opt_out_events_message_id", opt_out_events.c.message_id, unique=True)
