"""All SQL of the acknowledgement path and of the journal: nonces, quarantine, journal rows and
the projector's cursor.

Functions take an open connection inside a transaction; the caller owns commit/rollback. They
are synchronous: the group committer and the projector run a whole batch in one go on the
process's writer (db/engine.py). Dedupe is insert-on-conflict with RETURNING, never
select-then-insert: the database is the only fair referee between processes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, func, select, update

from plivo_tracker.db.dialect import (
    insert_ignore_returning,
    journal_order_sql,
    lock_for_update,
)
from plivo_tracker.db.engine import mark_journal_appended
from plivo_tracker.messages.models import callback_nonces, cursors, journal, quarantine

PROJECTOR = "projector"  # the projector's row in `cursors`

_NONCE_COLS = ("nonce", "received_at")
JOURNAL_COLS = (
    "received_at",
    "source",
    "method",
    "dedupe_key",
    "message_key",
    "status",
    "nonce",
    "signature_scheme",
    "payload",
    "headers",
)


def insert_new_nonces(conn: Connection, nonces: Sequence[str], now: datetime) -> set[str]:
    """Insert nonces; return those that were not stored before (the rest are replays)."""
    if not nonces:
        return set()
    rows = [(n, now) for n in nonces]
    new = insert_ignore_returning(conn, callback_nonces, _NONCE_COLS, ["nonce"], ["nonce"], rows)
    return {r[0] for r in new}


def insert_quarantine(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows:
        conn.execute(quarantine.insert(), list(rows))


def append_journal(conn: Connection, rows: Sequence[Sequence[Any]]) -> set[str]:
    """Append reports (values in JOURNAL_COLS order); returns the dedupe keys that were new.

    Takes the journal's ordering lock first (PostgreSQL), so ids become visible in order."""
    if not rows:
        return set()
    sql = journal_order_sql(conn.dialect)
    if sql is not None:
        conn.exec_driver_sql(sql)
    new = insert_ignore_returning(conn, journal, JOURNAL_COLS, ["dedupe_key"], ["dedupe_key"], rows)
    if new:
        mark_journal_appended(conn)
    return {r[0] for r in new}


def journal_after(conn: Connection, after: int, limit: int) -> list[dict[str, Any]]:
    """Journal rows with an id above `after`, in id order, at most `limit`."""
    cols = ("id", *JOURNAL_COLS)
    stmt = select(*(journal.c[c] for c in cols)).where(journal.c.id > after)
    rows = conn.execute(stmt.order_by(journal.c.id).limit(limit)).all()
    return [dict(zip(cols, r, strict=True)) for r in rows]


def pending_keys(conn: Connection, source: str, keys: Sequence[str], exclude: str) -> set[str]:
    """The `message_key`s among `keys` of journal rows of `source` not yet applied, leaving
    out rows whose dedupe key starts with `exclude`."""
    rows = conn.execute(
        select(journal.c.message_key).where(
            journal.c.id > cursor_position().scalar_subquery(),
            journal.c.source == source,
            journal.c.message_key.in_(list(keys)),
            journal.c.dedupe_key.not_like(exclude + "%"),
        )
    )
    return set(rows.scalars())


def cursor_position(name: str = PROJECTOR) -> Select[Any]:
    """`SELECT position FROM cursors WHERE name = …`: the last journal id applied."""
    return select(cursors.c.position).where(cursors.c.name == name)


def lock_cursor(conn: Connection, name: str = PROJECTOR) -> int:
    """The cursor's position, locked until the transaction ends: one projection pass at a time
    across processes, whatever leadership says (SQLite: BEGIN IMMEDIATE already does it)."""
    stmt = cursor_position(name)
    return int(conn.execute(lock_for_update(conn.dialect, stmt)).scalar_one())


def move_cursor(conn: Connection, position: int, now: datetime, name: str = PROJECTOR) -> None:
    conn.execute(
        update(cursors).where(cursors.c.name == name).values(position=position, updated_at=now)
    )


def projection_state(conn: Connection, name: str = PROJECTOR) -> tuple[int, int]:
    """(cursor, newest journal id): the journal is applied up to the first of the two."""
    cursor = conn.execute(cursor_position(name)).scalar()
    head = conn.execute(select(func.max(journal.c.id))).scalar()
    return int(cursor or 0), int(head or 0)


def set_aside_next(conn: Connection, reason: str, now: datetime) -> tuple[int, str] | None:
    """Move the cursor past the next journal row, keeping the row in the quarantine with
    `reason` (the projector could not apply it); returns its journal id and source (None: none
    left)."""
    cursor = lock_cursor(conn)
    rows = journal_after(conn, cursor, 1)
    if not rows:
        return None
    row = rows[0]
    insert_quarantine(
        conn,
        [
            {
                "received_at": row["received_at"],
                "path": f"journal/{row['id']}",
                "method": row["method"] or "",
                "query": "",
                "headers": row["headers"],
                "body": row["payload"].encode(),
                "reason": reason[:300],
                "nonce": row["nonce"],
            }
        ],
    )
    move_cursor(conn, int(row["id"]), now)
    return int(row["id"]), str(row["source"])
