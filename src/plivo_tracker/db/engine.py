"""make_engine(url): SQLite pragmas (WAL, synchronous=FULL, busy timeout), a PostgreSQL pool or
a MariaDB pool.

Durability is configured here, in one place: SQLite commits with `synchronous=FULL` in WAL mode
(an acknowledged commit survives power loss), PostgreSQL sessions pin `synchronous_commit=on`;
MariaDB's is the server's `innodb_flush_log_at_trx_commit=1` (its default; `doctor` checks it).
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import structlog
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, InternalError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

T = TypeVar("T")
log = structlog.get_logger(__name__)

# Execution option marking a connection that will write: on SQLite it opens the transaction with
# BEGIN IMMEDIATE, so the write lock is taken up front instead of failing on lock upgrade.
WRITE = {"plivo_tracker_write": True}


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (None for in-memory or other dialects)."""
    u = make_url(url)
    if not u.drivername.startswith("sqlite") or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def make_engine(
    url: str, *, pool_size: int = 10, read_only: bool = False, pgbouncer: bool = False
) -> AsyncEngine:
    """`read_only`: nothing written through it (`db copy`'s source). SQLite: the file opened
    with `mode=ro` (it must exist; no directory is made) and `query_only`; PostgreSQL: every
    transaction READ ONLY. `pgbouncer`: `url` is a PgBouncer in transaction mode
    (`pgbouncer_engine`)."""
    # Every engine here hides bound parameters (message texts, numbers, payloads) from its error
    # messages, which get logged: "[SQL parameters hidden due to hide_parameters=True]".
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if read_only:
            if path is None:
                raise ValueError("a read-only SQLite database must be a file")
            uri = "file:" + quote(str(path.resolve()))
            ro = make_url(url).set(database=uri, query={"mode": "ro", "uri": "true"})
            url = ro.render_as_string(hide_password=False)
        elif path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, hide_parameters=True)
        _sqlite_events(engine, read_only=read_only)
        return engine
    if url.startswith("mysql"):
        return _mariadb_engine(url, pool_size=pool_size, read_only=read_only)
    if pgbouncer:
        return pgbouncer_engine(url, pool_size=pool_size)
    server_settings = {"synchronous_commit": "on", "application_name": "plivo-tracker"}
    if read_only:
        server_settings["default_transaction_read_only"] = "on"
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        hide_parameters=True,
        connect_args={
            # Fail fast when the server is gone, so callbacks reach the spool within Plivo's 8 s.
            "timeout": 3,
            "server_settings": server_settings,
        },
    )


def _mariadb_engine(url: str, *, pool_size: int, read_only: bool) -> AsyncEngine:
    """MariaDB through asyncmy (docs/adr/0012): READ COMMITTED like PostgreSQL (InnoDB's default
    REPEATABLE READ would keep a transaction's first snapshot and take gap locks), UTC session
    time, strict SQL mode."""
    # asyncmy logs every server warning at WARNING level, with the values it names ("Duplicate
    # entry '+14155550100' for key ..." from an INSERT IGNORE): numbers stay out of our logs.
    logging.getLogger("asyncmy").setLevel(logging.ERROR)
    settings = "time_zone = '+00:00', sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'"
    if read_only:
        settings += ", tx_read_only = 1"
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=3600,  # under the server's wait_timeout (8 h by default)
        hide_parameters=True,
        isolation_level="READ COMMITTED",
        connect_args={"connect_timeout": 3, "init_command": "SET " + settings},
    )


# --- PgBouncer in transaction mode (DATABASE_POOLER=pgbouncer; docs/deploy.md) ---------------

# Engine execution option: every durable write transaction pins `synchronous_commit` itself
# (`SET LOCAL`), since a pooled server connection keeps no setting of ours.
PGBOUNCER = "plivo_tracker_pgbouncer"


def pgbouncer_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """PostgreSQL through PgBouncer in transaction mode: each transaction may run on another
    server connection. asyncpg's statement cache and SQLAlchemy's are off (a statement
    prepared in one transaction is not on the next one's server connection), and the
    statements SQLAlchemy still prepares within a transaction get names unique to this
    process, so that two clients never collide on one server connection
    (`__asyncpg_stmt_1__ already exists`). PgBouncer 1.18 (Debian 12) forwards no startup
    settings but `application_name`: `synchronous_commit` is set per write transaction."""
    u = make_url(url).update_query_dict({"prepared_statement_cache_size": "0"})
    return create_async_engine(
        u,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        hide_parameters=True,
        execution_options={PGBOUNCER: True},
        connect_args={
            "timeout": 3,
            "statement_cache_size": 0,
            "prepared_statement_name_func": lambda: f"__asyncpg_{uuid.uuid4().hex}__",
            "server_settings": {"application_name": "plivo-tracker"},
        },
    )


def sync_sqlite_engine(url: str) -> Engine:
    """A synchronous engine on a SQLite URL with the same pragmas (WAL, FULL, busy timeout,
    BEGIN IMMEDIATE for writers): no event loop, no aiosqlite thread (`serve --workers N`
    migrates with it before any worker starts)."""
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        make_url(url).set(drivername="sqlite"), connect_args={"timeout": 30}, hide_parameters=True
    )
    _sqlite_events(engine)
    return engine


def _sqlite_events(engine: AsyncEngine | Engine, *, read_only: bool = False) -> None:
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (below) instead of the driver's implicit one.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if read_only:  # the journal mode is the file's own; a read-only file keeps it
            cur.execute("PRAGMA query_only=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
            return
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("plivo_tracker_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


async def writer(conn: AsyncConnection) -> AsyncConnection:
    """Mark `conn` as a writer before its transaction begins."""
    return await conn.execution_options(**WRITE)


_JOURNAL_APPENDED = "plivo_tracker.journal_appended"


def mark_journal_appended(conn: Connection) -> None:
    """Note that this transaction appends to the journal (the writer wakes the projector)."""
    conn.info[_JOURNAL_APPENDED] = True


def _appended(conn: Connection | AsyncConnection) -> bool:
    # The connection's info outlives the checkout: always taken off, committed or not.
    return bool(conn.info.pop(_JOURNAL_APPENDED, False))


class DatabaseUnavailable(RuntimeError):
    """No connection could be had at all (as opposed to a statement failing)."""


# DB-API errors about the connection or the server's state, not about the statement (a
# constraint, bad SQL): the same work may well succeed a moment later.
_CONNECTION_ERRORS = (OperationalError, InterfaceError, InternalError)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what caused it: an exception raised while SQLAlchemy handled another one
    says what happened in its cause or context."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def database_lost(exc: BaseException) -> bool:
    """Did `exc` come from losing the database: unreachable, restarting, or the connection cut
    or broken under a statement?"""
    for current in _chain(exc):
        if isinstance(current, DatabaseUnavailable | ConnectionError):
            return True
        if isinstance(current, DBAPIError) and (
            current.connection_invalidated or isinstance(current, _CONNECTION_ERRORS)
        ):
            return True
    return False


# The server rolled the whole transaction back and asks for it to be run again: chosen as a
# deadlock's victim (PostgreSQL 40P01, MariaDB 1213), or a serialization failure (40001).
_RUN_AGAIN_SQLSTATES = frozenset({"40P01", "40001"})
_RUN_AGAIN_ERRNOS = frozenset({1213})
# How many times a writer runs a transaction the server keeps choosing as a deadlock's victim.
DEADLOCK_ATTEMPTS = 5


def deadlocked(exc: BaseException) -> bool:
    """Was `exc` the server rolling the transaction back to break a deadlock (`Writer.run`
    runs it again)? asyncpg's errors carry a SQLSTATE, asyncmy's an error number first."""
    for current in _chain(exc):
        if not isinstance(current, DBAPIError):
            continue
        orig = current.orig
        if getattr(orig, "sqlstate", None) in _RUN_AGAIN_SQLSTATES:
            return True
        args = getattr(orig, "args", ())
        if args and isinstance(args[0], int) and args[0] in _RUN_AGAIN_ERRNOS:
            return True
    return False


class Writer(Protocol):
    """Runs a synchronous function inside one write transaction and commits it.

    `background=True`: bulk work nobody waits for, which a crash may undo because it is simply
    done again (the purge's deletes). Its COMMIT does not wait for the disk (SQLite:
    `synchronous=NORMAL` for that transaction, PostgreSQL: `synchronous_commit=off`); every
    later durable COMMIT flushes the log past it, so an acknowledged callback stays as durable
    as before. On SQLite its statements also run on the writer's thread, not the event loop,
    so the loop keeps answering requests (and sending the 200s of committed batches) meanwhile.

    `fn` may run more than once: PostgreSQL and MariaDB roll a deadlock's victim back whole
    (InnoDB's locks, taken as rows are read and on unique-index gaps, make deadlocks a normal
    event there), and the writer then runs it again in a new transaction, up to
    DEADLOCK_ATTEMPTS times. So `fn` changes nothing but the database and what it returns:
    counters and wake-ups belong after `run`."""

    # Called on the event loop after every successful COMMIT (wakes the live feed).
    on_commit: Callable[[], None] | None
    # Called after a COMMIT that appended to the journal (`mark_journal_appended`): wakes the
    # projector, whoever appended (the callbacks' committer, the API, the dispatcher, ...).
    on_journal: Callable[[], None] | None

    async def run(self, fn: Callable[[Connection], T], *, background: bool = False) -> T: ...

    async def close(self) -> None: ...


class ThreadWriter:
    """SQLite: the batch's statements run right here on the event loop over a synchronous
    connection; only COMMIT, which waits for fsync, goes to a dedicated thread.

    Through aiosqlite every statement costs several thread round trips (~0.8 ms for `SELECT 1`
    here). Running the whole batch in a thread instead made both threads fight over the GIL:
    each of the batch's statements releases it and then waits up to the switch interval to get
    it back while the loop is busy parsing requests (measured in docs/benchmarks.md). The
    statements of a batch take a few milliseconds of CPU; the fsync is the only long wait.
    """

    def __init__(self, url: str) -> None:
        sync_url = make_url(url).set(drivername="sqlite")
        # check_same_thread off: the connection is used by the loop, then by the commit thread,
        # never by both at once (one batch at a time).
        self._engine = create_engine(
            sync_url,
            connect_args={"timeout": 30, "check_same_thread": False},
            hide_parameters=True,
        )
        _sqlite_events(self._engine)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-commit")
        # One write transaction at a time: a second one would wait for SQLite's write lock
        # inside BEGIN IMMEDIATE, on the event loop.
        self._lock = asyncio.Lock()
        self.on_commit: Callable[[], None] | None = None
        self.on_journal: Callable[[], None] | None = None

    async def run(self, fn: Callable[[Connection], T], *, background: bool = False) -> T:
        async with self._lock:
            if background:
                loop = asyncio.get_running_loop()
                result, appended = await loop.run_in_executor(self._executor, self._background, fn)
            else:
                result, appended = await self._run(fn)
        if self.on_commit is not None:
            self.on_commit()
        if appended and self.on_journal is not None:
            self.on_journal()
        return result

    async def _run(self, fn: Callable[[Connection], T]) -> tuple[T, bool]:
        try:
            conn = self._engine.connect()
        except Exception as exc:
            raise DatabaseUnavailable(str(exc)) from exc
        try:
            conn.execution_options(**WRITE)
            transaction = conn.begin()
            try:
                result = fn(conn)
            except BaseException:
                transaction.rollback()
                raise
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, transaction.commit)
            return result, _appended(conn)
        finally:
            _appended(conn)
            conn.close()

    def _background(self, fn: Callable[[Connection], T]) -> tuple[T, bool]:
        """The whole transaction on the writer's thread, committed without an fsync."""
        try:
            conn = self._engine.connect()
        except Exception as exc:
            raise DatabaseUnavailable(str(exc)) from exc
        # Outside any transaction, on the driver's connection (SQLAlchemy would begin one).
        raw: Any = conn.connection.dbapi_connection
        try:
            raw.execute("PRAGMA synchronous=NORMAL")
            conn.execution_options(**WRITE)
            with conn.begin():
                result = fn(conn)
            return result, _appended(conn)
        finally:
            _appended(conn)
            raw.execute("PRAGMA synchronous=FULL")  # the pooled connection's setting
            conn.close()

    async def close(self) -> None:
        self._engine.dispose()
        self._executor.shutdown(wait=True)


class AsyncWriter:
    """PostgreSQL and MariaDB: asyncpg and asyncmy are natively async, so the same sync code runs
    through `run_sync`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self.on_commit: Callable[[], None] | None = None
        self.on_journal: Callable[[], None] | None = None

    async def run(self, fn: Callable[[Connection], T], *, background: bool = False) -> T:
        attempt = 1
        while True:
            try:
                result, appended = await self._once(fn, background)
                break
            except Exception as exc:
                if attempt >= DEADLOCK_ATTEMPTS or not deadlocked(exc):
                    raise
                log.info("writer.deadlock_victim", attempt=attempt, error=repr(exc))
            # A moment's random pause, so the two sides of the deadlock do not meet again.
            await asyncio.sleep(random.uniform(0.0, 0.01 * 2**attempt))
            attempt += 1
        if self.on_commit is not None:
            self.on_commit()
        if appended and self.on_journal is not None:
            self.on_journal()
        return result

    async def _once(self, fn: Callable[[Connection], T], background: bool) -> tuple[T, bool]:
        conn = self._engine.connect()
        try:
            await conn.start()
        except Exception as exc:
            raise DatabaseUnavailable(str(exc)) from exc
        try:
            await writer(conn)
            try:
                async with conn.begin():
                    if background and conn.dialect.name == "postgresql":
                        await conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
                    elif self._engine.get_execution_options().get(PGBOUNCER):
                        await conn.exec_driver_sql("SET LOCAL synchronous_commit = on")
                    return await conn.run_sync(fn), _appended(conn)
            finally:
                _appended(conn)
        finally:
            await conn.close()

    async def close(self) -> None:
        return None


class Reader(Protocol):
    """Runs a short synchronous read function (the live feed's hot read)."""

    async def run(self, fn: Callable[[Connection], T]) -> T: ...

    async def close(self) -> None: ...


class LoopReader:
    """SQLite: the live feed's reads run right here on the event loop over a synchronous
    connection. A WAL reader never waits for the writer, and a read of new events takes well
    under a millisecond; through aiosqlite the same read waited 35-60 ms for its thread
    hand-offs on a busy loop (bench/live.py), most of the commit → WebSocket latency."""

    def __init__(self, url: str) -> None:
        sync_url = make_url(url).set(drivername="sqlite")
        self._engine = create_engine(
            sync_url,
            connect_args={"timeout": 30, "check_same_thread": False},
            hide_parameters=True,
        )
        _sqlite_events(self._engine)

    async def run(self, fn: Callable[[Connection], T]) -> T:
        try:
            conn = self._engine.connect()
        except Exception as exc:
            raise DatabaseUnavailable(str(exc)) from exc
        with conn:
            return fn(conn)

    async def close(self) -> None:
        self._engine.dispose()


class AsyncReader:
    """PostgreSQL and MariaDB: the same synchronous read code through `run_sync`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def run(self, fn: Callable[[Connection], T]) -> T:
        async with self._engine.connect() as conn:
            return await conn.run_sync(fn)

    async def close(self) -> None:
        return None


def make_reader(engine: AsyncEngine) -> Reader:
    if engine.dialect.name == "sqlite":
        return LoopReader(engine.url.render_as_string(hide_password=False))
    return AsyncReader(engine)


def make_writer(engine: AsyncEngine) -> Writer:
    """The write path for batches: a writer thread on SQLite, the async engine on PostgreSQL and
    MariaDB."""
    if engine.dialect.name == "sqlite":
        return ThreadWriter(engine.url.render_as_string(hide_password=False))
    return AsyncWriter(engine)
