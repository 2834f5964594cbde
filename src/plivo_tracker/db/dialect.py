"""The dialect seam: the only place (with engine.py) that asks "SQLite, PostgreSQL or MariaDB?".

MariaDB (dialect name "mysql", driver asyncmy) takes the PostgreSQL way where it has one (row
locks, SKIP LOCKED, RETURNING) and its own where not (docs/adr/0012): INSERT IGNORE for
insert-or-ignore, ON DUPLICATE KEY UPDATE for the rollups' upsert, a locked row of
`order_locks` for the advisory locks that order ids, polling for LISTEN/NOTIFY.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Select, String, Table, UniqueConstraint
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DataError
from sqlalchemy.ext.asyncio import AsyncConnection

from plivo_tracker.db.base import UTCDateTime


def is_mariadb(dialect: Dialect) -> bool:
    return dialect.name == "mysql"


MIN_MARIADB = (10, 6)  # SKIP LOCKED came in 10.6; INSERT … RETURNING in 10.5


def mariadb_server_problem(version: str, flush_at_commit: int) -> str | None:
    """Why this MySQL-family server cannot hold our data (None: it can). `version` is what
    `SELECT VERSION()` says ("10.11.19-MariaDB-0+deb12u1"), `flush_at_commit` the server's
    innodb_flush_log_at_trx_commit. MySQL itself is refused: it has no INSERT … RETURNING,
    which every insert-or-ignore here reads its new rows from (docs/adr/0012)."""
    if "mariadb" not in version.lower():
        return (
            f"MySQL {version.split('-')[0]} is not supported: it has no INSERT … RETURNING; "
            f"use MariaDB {MIN_MARIADB[0]}.{MIN_MARIADB[1]} or newer, or PostgreSQL"
        )
    parts = version.split("-")[0].split(".")
    try:
        major, minor = int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return f"cannot read the MariaDB version {version!r}"
    if (major, minor) < MIN_MARIADB:
        return f"MariaDB {major}.{minor} is too old: {MIN_MARIADB[0]}.{MIN_MARIADB[1]} or newer"
    if flush_at_commit != 1:
        return (
            f"innodb_flush_log_at_trx_commit is {flush_at_commit}: a COMMIT does not reach the "
            "disk, so an acknowledged callback can be lost; set it to 1 (the default)"
        )
    return None


def server_problem(conn: Connection) -> str | None:
    """`mariadb_server_problem` of the server `conn` talks to (None on SQLite and PostgreSQL)."""
    if not is_mariadb(conn.dialect):
        return None
    row = conn.exec_driver_sql("SELECT VERSION(), @@innodb_flush_log_at_trx_commit").one()
    return mariadb_server_problem(str(row[0]), int(row[1]))


def insert_ignore(dialect: Dialect, table: Table, conflict_cols: Sequence[str]) -> Any:
    """INSERT … ON CONFLICT (cols) DO NOTHING for the given dialect. MariaDB: INSERT IGNORE,
    which skips a row colliding on any unique key (these tables have one besides the primary
    key at most: the conflict columns) and RETURNING gives only the rows it inserted. IGNORE
    also turns a too long text into a truncation warning: what goes through here is our own,
    validated values; Plivo's go through `insert_ignore_returning`, which checks lengths."""
    if is_mariadb(dialect):
        return mysql.insert(table).prefix_with("IGNORE")
    mod: Any = postgresql if dialect.name == "postgresql" else sqlite
    return mod.insert(table).on_conflict_do_nothing(index_elements=list(conflict_cols))


def upsert_add(
    conn: Connection,
    table: Table,
    keys: Sequence[str],
    values: Sequence[str],
    rows: Sequence[Sequence[Any]],
) -> None:
    """INSERT rows (keys then values, in that order) … ON CONFLICT (keys) DO UPDATE adding the
    values to what is stored: counters changed by differences (the statistics rollups)."""
    if not rows:
        return
    cols = [*keys, *values]
    stmt: Any
    if is_mariadb(conn.dialect):
        stmt = mysql.insert(table)
        stmt = stmt.on_duplicate_key_update({v: table.c[v] + stmt.inserted[v] for v in values})
    else:
        mod: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
        stmt = mod.insert(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=list(keys),
            set_={v: table.c[v] + stmt.excluded[v] for v in values},
        )
    # executemany: SQLAlchemy batches it into multi-row statements itself ("insertmanyvalues")
    conn.execute(stmt, [dict(zip(cols, r, strict=True)) for r in rows])


def skip_locked(dialect: Dialect, stmt: Select[Any], of: Any = None) -> Select[Any]:
    """Claim query: PostgreSQL skips rows other workers hold (FOR UPDATE SKIP LOCKED; `of`: only
    that table's rows, e.g. beside an outer join); SQLite has one writer at a time, so the claim
    is atomic under BEGIN IMMEDIATE as it is. MariaDB skips locked rows too (10.6+) but has no
    `OF`: it locks the rows it reads of every table in the join."""
    if dialect.name == "postgresql":
        return stmt.with_for_update(skip_locked=True, of=of)
    if is_mariadb(dialect):
        return stmt.with_for_update(skip_locked=True)
    return stmt


def shared_rate_limit(dialect: Dialect) -> bool:
    """Several dispatcher processes share PLIVO_MPS through a row on PostgreSQL and MariaDB; on
    SQLite one process dispatches, so its bucket lives in memory."""
    return dialect.name != "sqlite"


OUTBOX_CHANNEL = "plivo_tracker_outbox"


def notify_outbox_sql(dialect: Dialect) -> str | None:
    """Statement that wakes dispatchers in other processes when the transaction commits
    (PostgreSQL NOTIFY is delivered on COMMIT); SQLite has one dispatching process."""
    return f"NOTIFY {OUTBOX_CHANNEL}" if dialect.name == "postgresql" else None


def order_lock_sql(name: str) -> str:
    """MariaDB's transaction-scoped advisory lock: its row of `order_locks` (migration 0012),
    locked until COMMIT or ROLLBACK. GET_LOCK would be held by the session instead, past the
    transaction, and outlive it on a pooled connection if anything skipped its release."""
    return f"SELECT name FROM order_locks WHERE name = '{name}' FOR UPDATE"


EVENTS_CHANNEL = "plivo_tracker_events"
# Any constant: the advisory lock that makes status-event ids ascend in commit order.
EVENT_ORDER_LOCK = 7_083_745_260_101


def event_order_sql(dialect: Dialect, notify: bool = True) -> str | None:
    """First statement of every transaction that inserts status events (docs/adr/0006).

    PostgreSQL: a transaction-scoped advisory lock, held until COMMIT, so event ids are drawn
    and made visible one transaction at a time: a reader that sees id N sees every id below N
    for good. The same statement queues a NOTIFY (delivered on COMMIT, dropped on rollback)
    that wakes the live feed of every server process. SQLite: BEGIN IMMEDIATE already admits
    one writer at a time, and one process's writer wakes its own feed. `notify=False`: only the
    lock (the purge, which adds no events, takes it to wait its turn among the writers).
    MariaDB: the row lock of `order_lock_sql`; other processes' feeds find new events by polling.
    """
    if dialect.name == "postgresql":
        wake = f", pg_notify('{EVENTS_CHANNEL}', '')" if notify else ""
        return f"SELECT pg_advisory_xact_lock({EVENT_ORDER_LOCK}){wake}"
    if is_mariadb(dialect):
        return order_lock_sql("events")
    return None


JOURNAL_CHANNEL = "plivo_tracker_journal"
# Another constant: the advisory lock that makes journal ids ascend in commit order.
JOURNAL_ORDER_LOCK = 7_083_745_260_102


def journal_order_sql(dialect: Dialect) -> str | None:
    """First statement of every transaction that appends to the callback journal.

    The projector reads "every journal row above my cursor"; that read may never pass a row
    that commits later with a lower id. PostgreSQL draws ids before COMMIT (several `serve`
    workers append at once), so appends take a transaction-scoped advisory lock, exactly like
    status events (docs/adr/0006), and queue a NOTIFY that wakes the projector of whichever
    process leads. SQLite: BEGIN IMMEDIATE already admits one writer at a time. MariaDB: the
    row lock of `order_lock_sql`; the projector of another process finds the rows by polling.
    """
    if dialect.name == "postgresql":
        return (
            f"SELECT pg_advisory_xact_lock({JOURNAL_ORDER_LOCK}), "
            f"pg_notify('{JOURNAL_CHANNEL}', '')"
        )
    if is_mariadb(dialect):
        return order_lock_sql("journal")
    return None


def lock_for_update(dialect: Dialect, stmt: Select[Any]) -> Select[Any]:
    """Row locks on PostgreSQL and MariaDB; SQLite already holds the database write lock (BEGIN
    IMMEDIATE)."""
    if dialect.name != "sqlite":
        return stmt.with_for_update()
    return stmt


# ---- driver-level statements for the callback batch (hot path) -----------------------------
#
# SQLAlchemy Core spends ~2 µs per bound value on parameter and type processing; for the batch
# writes of the group committer (dozens of rows × up to 17 columns, several statements) that was
# the largest cost per callback. These helpers render the same statements once per shape and pass
# driver-ready values. Reads and everything else keep using Core.

_MAX_PARAMS = 30_000  # SQLite (32766), PostgreSQL (32767) and MariaDB (65535) cap parameters


def _placeholders(dialect: Dialect, n_rows: int, n_cols: int) -> str:
    if is_mariadb(dialect):  # asyncmy's paramstyle is "format"
        one = "(" + ",".join(["%s"] * n_cols) + ")"
        return ",".join([one] * n_rows)
    if dialect.name == "postgresql":
        rows = []
        for r in range(n_rows):
            base = r * n_cols
            rows.append("(" + ",".join(f"${base + c + 1}" for c in range(n_cols)) + ")")
        return ",".join(rows)
    one = "(" + ",".join("?" * n_cols) + ")"
    return ",".join([one] * n_rows)


def _sqlite_time(value: datetime | str | None) -> str | None:
    # The text SQLAlchemy's SQLite DATETIME writes: naive UTC, always with microseconds (what
    # MariaDB's DATETIME(6) takes as well).
    if value is None or isinstance(value, str):
        return value  # None, or a value read back at driver level and written unchanged
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def time_columns(dialect: Dialect, table: Table, cols: Sequence[str]) -> tuple[int, ...]:
    """Positions in `cols` whose values need converting for the driver (SQLite and MariaDB
    timestamps: naive UTC)."""
    if dialect.name == "postgresql":
        return ()
    return tuple(i for i, c in enumerate(cols) if isinstance(table.c[c].type, UTCDateTime))


def to_driver_row(row: Sequence[Any], time_positions: tuple[int, ...]) -> Sequence[Any]:
    """A row of Python values as the driver stores them (see `time_columns`)."""
    if not time_positions:
        return row
    out = list(row)
    for i in time_positions:
        out[i] = _sqlite_time(out[i])
    return out


def from_driver_time(value: Any) -> datetime | None:
    """A timestamp read at driver level: SQLite text (naive UTC), a MariaDB datetime (naive
    UTC) or a PostgreSQL datetime (aware)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def rows_per_statement(n_cols: int) -> int:
    return max(1, _MAX_PARAMS // n_cols)


def insert_ignore_returning_sql(
    dialect: Dialect,
    table: Table,
    cols: Sequence[str],
    conflict: Sequence[str],
    returning: Sequence[str],
    n_rows: int,
) -> str:
    """`INSERT … VALUES (…),(…) ON CONFLICT (…) DO NOTHING RETURNING …` for n_rows rows
    (MariaDB: `INSERT IGNORE … RETURNING …`, which returns the inserted rows only)."""
    if is_mariadb(dialect):
        return (
            f"INSERT IGNORE INTO {table.name} ({', '.join(cols)}) VALUES "
            f"{_placeholders(dialect, n_rows, len(cols))} RETURNING {', '.join(returning)}"
        )
    return (
        f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES "
        f"{_placeholders(dialect, n_rows, len(cols))} "
        f"ON CONFLICT ({', '.join(conflict)}) DO NOTHING RETURNING {', '.join(returning)}"
    )


def select_in_sql(
    dialect: Dialect, table: Table, cols: Sequence[str], key: str, n: int, lock: bool
) -> str:
    """`SELECT cols FROM t WHERE key IN (…) ORDER BY id` (+ FOR UPDATE but on SQLite).

    MariaDB is made to read through `key`'s unique index: InnoDB locks every row it reads, and
    on a small table its optimizer prefers to scan the primary key for the ORDER BY, which
    waits for the lock of every uncommitted row (a message being sent) and deadlocked with its
    insert (that insert waits in turn for the unique index's gap this transaction locked)."""
    marks = _placeholders(dialect, 1, n)[1:-1]
    source = table.name
    if is_mariadb(dialect):
        source += f" FORCE INDEX ({_unique_index(table, key)})"
    sql = f"SELECT {', '.join(cols)} FROM {source} WHERE {key} IN ({marks}) ORDER BY id"
    return sql + (" FOR UPDATE" if lock and dialect.name != "sqlite" else "")


def _unique_index(table: Table, key: str) -> str:
    """The name of the unique constraint or index on `key` alone."""
    for c in table.constraints:
        if isinstance(c, UniqueConstraint) and [col.name for col in c.columns] == [key]:
            return str(c.name)
    for index in table.indexes:
        if index.unique and [col.name for col in index.columns] == [key]:
            return str(index.name)
    raise ValueError(f"{table.name}.{key} has no unique index")


def update_by_id_sql(dialect: Dialect, table: Table, cols: Sequence[str]) -> str:
    """`UPDATE t SET c1 = ?, … WHERE id = ?` (values in `cols` order, then the id)."""
    if dialect.name == "postgresql":
        sets = ", ".join(f"{c} = ${i + 1}" for i, c in enumerate(cols))
        return f"UPDATE {table.name} SET {sets} WHERE id = ${len(cols) + 1}"
    mark = "%s" if is_mariadb(dialect) else "?"
    sets = ", ".join(f"{c} = {mark}" for c in cols)
    return f"UPDATE {table.name} SET {sets} WHERE id = {mark}"


def insert_ignore_returning(
    conn: Connection,
    table: Table,
    cols: Sequence[str],
    conflict: Sequence[str],
    returning: Sequence[str],
    rows: Sequence[Sequence[Any]],
) -> list[tuple[Any, ...]]:
    """Multi-row insert-ignore at driver level; returns the `returning` columns of new rows."""
    dialect = conn.dialect
    out: list[tuple[Any, ...]] = []
    step = rows_per_statement(len(cols))
    times = time_columns(dialect, table, cols)
    if is_mariadb(dialect):
        check_lengths(table, cols, rows)
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        sql = insert_ignore_returning_sql(dialect, table, cols, conflict, returning, len(chunk))
        params = tuple(v for row in chunk for v in to_driver_row(row, times))
        out.extend(tuple(r) for r in conn.exec_driver_sql(sql, params))
    return out


def check_lengths(table: Table, cols: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Refuse a text longer than its column, as PostgreSQL does, before MariaDB's INSERT IGNORE
    would store it cut short with only a warning. The error names the column, not the value."""
    limits: list[tuple[int, str, int]] = []
    for i, c in enumerate(cols):
        type_ = table.c[c].type
        if isinstance(type_, String) and type_.length:
            limits.append((i, c, type_.length))
    for row in rows:
        for i, c, length in limits:
            value = row[i]
            if isinstance(value, str) and len(value) > length:
                raise DataError(
                    f"INSERT INTO {table.name}",
                    None,
                    ValueError(f"value too long for {table.name}.{c} ({len(value)} > {length})"),
                )


def update_by_id(
    conn: Connection, table: Table, cols: Sequence[str], rows: Sequence[tuple[int, dict[str, Any]]]
) -> None:
    """One executemany `UPDATE … WHERE id = ?` at driver level; rows: (id, values by column)."""
    dialect = conn.dialect
    times = time_columns(dialect, table, cols)
    params = [(*to_driver_row([v[c] for c in cols], times), id_) for id_, v in rows]
    conn.exec_driver_sql(update_by_id_sql(dialect, table, cols), params)


# ---- db copy: key order and ids -------------------------------------------------------------


def byte_order(dialect: Dialect, column: Any) -> Any:
    """`column` as compared in byte order of its UTF-8 text (numbers as they are), the same on
    both databases: SQLite compares text with BINARY (memcmp) already; PostgreSQL's database
    collation (en_US, ...) sorts otherwise, and COLLATE "C" compares bytes. `db copy` walks
    keys in this order on either side, so a resumed copy continues where the last one stopped
    and both checksums read rows in one order."""
    if dialect.name == "postgresql" and isinstance(column.type, String):
        return column.collate("C")
    if is_mariadb(dialect) and isinstance(column.type, String):
        return column.collate("utf8mb4_nopad_bin")
    return column


def reset_id_sql(dialect: Dialect, table: Table) -> str | None:
    """After rows were inserted with their ids (`db copy`): move the table's id sequence past
    the largest id, or the next insert would collide. PostgreSQL only (BIGSERIAL or identity);
    SQLite's INTEGER PRIMARY KEY and MariaDB's AUTO_INCREMENT take the largest id + 1 by
    themselves."""
    column = table.autoincrement_column
    if dialect.name != "postgresql" or column is None:
        return None
    return (
        f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column.name}'), "
        f"COALESCE((SELECT max({column.name}) FROM {table.name}), 0) + 1, false)"
    )


async def insert_copied(conn: AsyncConnection, table: Table, rows: Sequence[Sequence[Any]]) -> None:
    """Insert rows read through the schema's types (values in column order) in the transaction
    `conn` has begun: one batch of `db copy`. PostgreSQL: binary COPY through the driver, in
    that transaction, committed without waiting for the disk (a crash loses at most the last
    batches, in order, and `--resume` does them again); SQLite: one executemany."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        # The first statement starts the transaction that COPY then runs in.
        await conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
        raw = await conn.get_raw_connection()
        await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
            table.name, records=rows, columns=[c.name for c in table.columns]
        )
        return
    keys = [c.key for c in table.columns]
    await conn.execute(table.insert(), [dict(zip(keys, row, strict=True)) for row in rows])
