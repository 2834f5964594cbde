"""`plivo-tracker db copy`: every table of the schema from one database to another (SQLite →
PostgreSQL to scale out, or back), resumable, verified.

- **Which tables.** Every table of the metadata, from `metadata.sorted_tables` (foreign keys
  first), never a list kept by hand; `alembic_version` is written by the migrations that create
  the target's schema. Rows keep their primary keys; on PostgreSQL each id sequence is moved
  past the largest id afterwards (`dialect.reset_id_sql`), or the next insert would collide.
- **Both at head.** The source must be at the migration head (else one line: run `db upgrade`
  on it); a target without a schema is migrated to head first, as `db upgrade` would.
- **Batches.** The source is read in one read-only transaction (one snapshot, whatever runs
  meanwhile), each table in primary-key order; every `batch_size` rows go to the target in a
  transaction of their own. Keys are compared in byte order on both sides
  (`dialect.byte_order`), so "after key K" means the same thing in SQLite and PostgreSQL.
- **Resume without a side file.** A batch commits a contiguous run of keys, and tables are
  copied one after the other: the target's largest key of each table is where that table's
  copy stopped. `--resume` continues after it; tables not reached yet are empty there.
- **Rows a new schema already holds** (the projector's cursor row, migration 0007) are not
  data: a target holding only those counts as empty, and such tables (a few rows) are copied
  whole in one transaction (delete, insert), so a resumed copy simply does them again. Which
  rows they are is learned from a scratch SQLite database migrated for the purpose, so no list
  of them can go stale either.
- **Refusals** (`CopyRefused`, exit 2): the same database on both sides, a source not at head,
  a target at another revision, a target holding data without `resume` or `force` (`force`
  deletes everything it holds first).
- **Verification.** Per table, the row count and a SHA-256 over every row in key order, each
  value normalised (`checksum`): computed the same way, in Python, on both sides.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Row, Table, delete, func, inspect, select, tuple_
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from plivo_tracker.db.base import UTCDateTime, metadata
from plivo_tracker.db.dialect import byte_order, insert_copied, reset_id_sql
from plivo_tracker.db.engine import sqlite_path, sync_sqlite_engine, writer
from plivo_tracker.db.migrate import current_revision, head_revision, upgrade, upgrade_sqlite
from plivo_tracker.messages import models as _messages  # noqa: F401  (registers the tables)
from plivo_tracker.optouts import models as _optouts  # noqa: F401  (the same)

DEFAULT_BATCH = 5000


class CopyRefused(Exception):
    """Nothing was written: a one-line reason (the CLI exits 2)."""


class CopyFailed(Exception):
    """A database could not be opened or read (the CLI exits 1): a one-line reason."""


class CopyInterrupted(Exception):
    """The test hook `stop_after_batches` stopped the copy (as a kill would, between batches)."""


class Progress(Protocol):
    """What the copy reports as it goes (the CLI draws Rich bars from it)."""

    def table(self, name: str, total: int, done: int) -> None: ...

    def advance(self, name: str, rows: int) -> None: ...


class _NoProgress:
    def table(self, name: str, total: int, done: int) -> None:
        return None

    def advance(self, name: str, rows: int) -> None:
        return None


@dataclass(frozen=True, slots=True)
class TableCheck:
    name: str
    source_rows: int
    target_rows: int
    source_sum: str
    target_sum: str

    @property
    def ok(self) -> bool:
        return self.source_rows == self.target_rows and self.source_sum == self.target_sum


@dataclass(slots=True)
class CopyResult:
    created_schema: bool = False
    resumed_from: dict[str, int] = field(default_factory=dict)  # rows already there per table
    copied: dict[str, int] = field(default_factory=dict)  # rows written by this run per table
    copy_seconds: float = 0.0
    verify_seconds: float = 0.0
    checks: list[TableCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def tables() -> list[Table]:
    """Every table of the schema, parents before the tables whose foreign keys point at them."""
    return list(metadata.sorted_tables)


# ---- what two URLs name ----------------------------------------------------------------------


_LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}


def database_identity(url: str) -> tuple[str, ...]:
    """What makes two URLs the same database: a SQLite file's resolved path; a PostgreSQL or
    MariaDB server's host, port and database name (whatever the driver, user or password)."""
    u = make_url(url)
    path = sqlite_path(url)
    if path is not None:
        return ("sqlite", str(path.expanduser().resolve()))
    if u.drivername.startswith("sqlite"):
        return ("sqlite", ":memory:")
    host = (u.host or "localhost").lower()
    host = "localhost" if host in _LOOPBACK else host
    if u.drivername.startswith("mysql"):
        return ("mariadb", host, str(u.port or 3306), u.database or "")
    return ("postgresql", host, str(u.port or 5432), u.database or "")


def same_database(a: str, b: str) -> bool:
    if database_identity(a) == database_identity(b):
        return True
    pa, pb = sqlite_path(a), sqlite_path(b)
    if pa is not None and pb is not None and pa.exists() and pb.exists():
        return pa.samefile(pb)  # hard links, symlinks
    return False


# ---- normalised values and checksums ---------------------------------------------------------


def _times(table: Table) -> tuple[int, ...]:
    return tuple(i for i, c in enumerate(table.columns) if isinstance(c.type, UTCDateTime))


def row_bytes(row: Sequence[Any], times: tuple[int, ...]) -> bytes:
    """One row in its normal form, the same whichever database it was read from: the values
    as read through the schema's types (int, str, bool, float, bytes, None), timestamps (at
    positions `times`) as UTC ISO 8601 with microseconds, written as Python's `repr` of the
    tuple: unambiguous (strings quoted and escaped, NULL is None, True is not 1)."""
    values = list(row)
    for i in times:
        value = values[i]
        if value is not None:
            if value.tzinfo is None:
                raise ValueError("naive datetime read from a UTC column")
            values[i] = value.astimezone(UTC).isoformat(timespec="microseconds")
    return repr(tuple(values)).encode("utf-8", "surrogatepass") + b"\n"


def checksum(table: Table, rows: Iterable[Sequence[Any]]) -> tuple[int, str]:
    """(rows, SHA-256 hex) of `table`'s rows given in key order."""
    digest = hashlib.sha256()
    times = _times(table)
    n = 0
    for row in rows:
        digest.update(row_bytes(row, times))
        n += 1
    return n, digest.hexdigest()


# ---- keys ------------------------------------------------------------------------------------


def byte_order_key(dialect: Dialect, table: Table) -> list[Any]:
    """The table's primary key, compared in byte order on either database (ORDER BY it)."""
    return [byte_order(dialect, c) for c in table.primary_key.columns]


def _key_order(conn: AsyncConnection, table: Table) -> list[Any]:
    return byte_order_key(conn.dialect, table)


def _after(conn: AsyncConnection, table: Table, key: Sequence[Any]) -> Any:
    cols = _key_order(conn, table)
    if len(cols) == 1:
        return cols[0] > key[0]
    return tuple_(*cols) > tuple_(*key)


async def _last_key(conn: AsyncConnection, table: Table) -> tuple[Any, ...] | None:
    stmt = select(*table.primary_key.columns).order_by(*(c.desc() for c in _key_order(conn, table)))
    row = (await conn.execute(stmt.limit(1))).first()
    return None if row is None else tuple(row)


async def _count(conn: AsyncConnection, table: Table) -> int:
    return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


# ---- rows a new schema holds -----------------------------------------------------------------


@functools.cache
def fresh_schema_rows() -> dict[str, tuple[str, ...]]:
    """Per table, the rows (normalised) of a database just migrated to head: a scratch SQLite
    file, migrated and read. Only tables that have any are listed."""
    with tempfile.TemporaryDirectory(prefix="plivo-tracker-fresh-") as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'fresh.db'}"
        upgrade_sqlite(url)
        engine = sync_sqlite_engine(url)
        try:
            with engine.connect() as conn:
                found = {
                    t.name: tuple(
                        row_bytes(r, _times(t)).decode()
                        for r in conn.execute(select(t).order_by(*t.primary_key.columns))
                    )
                    for t in tables()
                }
        finally:
            engine.dispose()
    return {name: rows for name, rows in found.items() if rows}


async def _holds_data(conn: AsyncConnection, table: Table) -> int:
    """Rows of `table` in the target beyond what a new schema holds (0: none)."""
    n = await _count(conn, table)
    seeded = fresh_schema_rows().get(table.name, ())
    if n == 0 or n > len(seeded):
        return n
    rows = await conn.execute(select(table).order_by(*_key_order(conn, table)))
    mine = tuple(row_bytes(r, _times(table)).decode() for r in rows)
    return 0 if set(mine) <= set(seeded) else n


# ---- the copy --------------------------------------------------------------------------------


async def check_source(source: AsyncEngine) -> None:
    """CopyRefused unless the source is at the migration head."""
    head = head_revision()
    at = await current_revision(source)
    if at != head:
        where = f"revision {at}" if at else "no revision (no plivo-tracker schema)"
        raise CopyRefused(
            f"the source database is at {where}, not the head {head}: run "
            "`plivo-tracker db upgrade` on it first (DATABASE_URL=the source)"
        )


async def _check_schemas(source: AsyncEngine, target: AsyncEngine) -> bool:
    """Refuse unless the source is at head; migrate a target without a schema. Returns
    whether the target's schema was created."""
    await check_source(source)
    head = head_revision()
    at = await current_revision(target)
    if at == head:
        return False
    if at is not None:
        raise CopyRefused(
            f"the target database is at revision {at}, not the head {head}: upgrade it with "
            "`plivo-tracker db upgrade`, or copy into an empty database"
        )
    async with target.connect() as conn:
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    ours = names & {t.name for t in tables()}
    if ours:
        raise CopyRefused(
            f"the target has tables ({', '.join(sorted(ours)[:3])}, ...) but no migration "
            "revision: copy into an empty database"
        )
    await upgrade(target)
    return True


async def _target_state(target: AsyncEngine) -> dict[str, int]:
    async with target.connect() as conn:
        return {t.name: await _holds_data(conn, t) for t in tables()}


async def _empty_target(target: AsyncEngine) -> None:
    """`force`: delete every row the target holds, children first, in one transaction."""
    async with target.connect() as conn:
        await writer(conn)
        async with conn.begin():
            for table in reversed(tables()):
                await conn.execute(delete(table))


async def _write(
    conn: AsyncConnection, table: Table, rows: Sequence[Row[Any]], *, whole: bool
) -> None:
    """One transaction on the target: the rows inserted (`whole`: the table's rows replaced)."""
    async with conn.begin():
        if whole:
            await conn.execute(delete(table))
        await insert_copied(conn, table, rows)


async def _reset_ids(target: AsyncEngine) -> None:
    async with target.connect() as conn:
        await writer(conn)
        async with conn.begin():
            for table in tables():
                sql = reset_id_sql(conn.dialect, table)
                if sql is not None:
                    await conn.exec_driver_sql(sql)


async def _snapshot(conn: AsyncConnection) -> None:
    """One read transaction for the whole copy: every table from the same moment."""
    if conn.dialect.name == "postgresql":
        await conn.execution_options(isolation_level="REPEATABLE READ")
    await conn.begin()


async def _copy_tables(
    source: AsyncEngine,
    target: AsyncEngine,
    result: CopyResult,
    *,
    batch_size: int,
    progress: Progress,
    stop_after_batches: int | None,
) -> None:
    seeded = fresh_schema_rows()
    batches = 0
    async with source.connect() as src, target.connect() as tgt:
        await _snapshot(src)
        await writer(tgt)
        for table in tables():
            total = await _count(src, table)
            if table.name in seeded:
                # A few rows, also in a new schema: replaced whole, in one transaction.
                rows = (await src.execute(select(table))).all()
                progress.table(table.name, total, 0)
                await _write(tgt, table, rows, whole=True)
                result.resumed_from[table.name] = 0
                result.copied[table.name] = len(rows)
                progress.advance(table.name, len(rows))
                continue
            async with tgt.begin():
                done = await _count(tgt, table)
                last = await _last_key(tgt, table) if done else None
            result.resumed_from[table.name] = done
            result.copied[table.name] = 0
            progress.table(table.name, total, done)
            stmt = select(table).order_by(*_key_order(src, table))
            if last is not None:
                stmt = stmt.where(_after(src, table, last))
            stream = await src.stream(stmt.execution_options(yield_per=batch_size))
            async for rows in stream.partitions(batch_size):
                await _write(tgt, table, rows, whole=False)
                result.copied[table.name] += len(rows)
                progress.advance(table.name, len(rows))
                batches += 1
                if stop_after_batches is not None and batches >= stop_after_batches:
                    await stream.close()
                    raise CopyInterrupted(f"stopped after {batches} batches (test hook)")
        await src.rollback()


async def _table_sum(
    engine: AsyncEngine, table: Table, batch_size: int, progress: Progress
) -> tuple[int, str]:
    digest = hashlib.sha256()
    times = _times(table)
    n = 0
    async with engine.connect() as conn:
        await _snapshot(conn)
        stmt = select(table).order_by(*_key_order(conn, table))
        stream = await conn.stream(stmt.execution_options(yield_per=batch_size))
        async for rows in stream.partitions(batch_size):
            for row in rows:
                digest.update(row_bytes(row, times))
            n += len(rows)
            progress.advance(VERIFYING, len(rows))
        await conn.rollback()
    return n, digest.hexdigest()


VERIFYING = "verifying"


async def verify(
    source: AsyncEngine,
    target: AsyncEngine,
    *,
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
    expected_rows: int = 0,
) -> list[TableCheck]:
    """Count and checksum every table on both sides (both read at once, table by table).
    `progress`: one bar, VERIFYING, over the rows of both sides (2 × `expected_rows`)."""
    progress = progress or _NoProgress()
    progress.table(VERIFYING, 2 * expected_rows, 0)
    checks = []
    for table in tables():
        (sn, ss), (tn, ts) = await asyncio.gather(
            _table_sum(source, table, batch_size, progress),
            _table_sum(target, table, batch_size, progress),
        )
        checks.append(TableCheck(table.name, sn, tn, ss, ts))
    return checks


async def copy_database(
    source: AsyncEngine,
    target: AsyncEngine,
    *,
    batch_size: int = DEFAULT_BATCH,
    resume: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    stop_after_batches: int | None = None,
) -> CopyResult:
    """Copy every table from `source` (opened read-only) to `target`, then verify.

    Raises CopyRefused before writing anything when the copy may not start (see the module's
    docstring); `stop_after_batches` is a test hook (CopyInterrupted once that many batches
    have committed)."""
    if batch_size < 1:
        raise CopyRefused("--batch-size must be at least 1")
    if resume and force:
        raise CopyRefused("give --resume or --force, not both")
    result = CopyResult()
    result.created_schema = await _check_schemas(source, target)
    holding = {name: n for name, n in (await _target_state(target)).items() if n}
    if holding and not (resume or force):
        listed = ", ".join(f"{n:,} in {name}" for name, n in list(holding.items())[:3])
        raise CopyRefused(
            f"the target already holds data ({listed}{', ...' if len(holding) > 3 else ''}): "
            "--resume continues an interrupted copy into it, --force deletes what it holds first"
        )
    if holding and force:
        await _empty_target(target)
    progress = progress or _NoProgress()
    started = time.perf_counter()
    await _copy_tables(
        source,
        target,
        result,
        batch_size=batch_size,
        progress=progress,
        stop_after_batches=stop_after_batches,
    )
    await _reset_ids(target)
    result.copy_seconds = time.perf_counter() - started
    started = time.perf_counter()
    rows = sum(result.resumed_from.values()) + sum(result.copied.values())
    result.checks = await verify(
        source, target, batch_size=batch_size, progress=progress, expected_rows=rows
    )
    result.verify_seconds = time.perf_counter() - started
    return result
