"""STORE_MESSAGE_TEXT=false: erase a message's text and media URLs in the transaction that makes
them unnecessary for sending (Plivo accepted it, or it failed for good), never before.

Called inside the write transactions that record those moments: the dispatcher's record of a
pass and of a lookup, the callback batch (after any resend copied the text), the sweeper, and an
operator's adoption. With text stored (`erasure` None) it does nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection

from plivo_tracker.retention import repository as repo
from plivo_tracker.retention.rules import Erasure


def erase_unneeded(
    conn: Connection, ids: Sequence[int], now: datetime, erasure: Erasure | None
) -> list[int]:
    """Erase the content of those of `ids` that sending no longer needs; returns their ids."""
    if erasure is None or not ids:
        return []
    done = [
        message_id
        for message_id, status, reason, outbox_state in repo.content_states(conn, ids)
        if not erasure.still_needed(status, reason, outbox_state)
    ]
    repo.erase_content(conn, done, now)
    return done
