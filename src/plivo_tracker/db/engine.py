"""make_engine(url): SQLite pragmas (WAL, synchronous=FULL, busy timeout) or a PostgreSQL pool.

Durability is configured here, in one place: SQLite commits with `synchronous=FULL` in WAL mode
(an acknowledged commit survives power loss), PostgreSQL sessions pin `synchronous_commit=on`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

# Execution option marking a connection that will write: on SQLite it opens the transaction with
# BEGIN IMMEDIATE, so the write lock is taken up front instead of failing on lock upgrade.
WRITE = {"plivo_tracker_write": True}


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (None for in-memory or other dialects)."""
    u = make_url(url)
    if not u.drivername.startswith("sqlite") or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        _sqlite_events(engine)
        return engine
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={
            # Fail fast when the server is gone, so callbacks reach the spool within Plivo's 8 s.
            "timeout": 3,
            "server_settings": {
                "synchronous_commit": "on",
                "application_name": "plivo-tracker",
            },
        },
    )


def _sqlite_events(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (below) instead of the driver's implicit one.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("plivo_tracker_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


async def writer(conn: AsyncConnection) -> AsyncConnection:
    """Mark `conn` as a writer before its transaction begins."""
    return await conn.execution_options(**WRITE)
