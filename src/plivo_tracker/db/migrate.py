"""Schema migrations: upgrade to head (automatic on SQLite) and the "schema at head?" check."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from plivo_tracker.db.dialect import server_problem
from plivo_tracker.db.engine import WRITE, sync_sqlite_engine, writer

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class UnsupportedDatabase(RuntimeError):
    """The server cannot hold our data as promised (MySQL, an old MariaDB, commits that do not
    reach the disk): nothing is migrated."""


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("file_template", "%%(year)d-%%(month).2d-%%(day).2d_%%(rev)s_%%(slug)s")
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Apply migrations over the engine's own connection (works inside a running event loop)."""

    def _run(sync_conn: Connection) -> None:
        problem = server_problem(sync_conn)
        if problem is not None:
            raise UnsupportedDatabase(problem)
        cfg = alembic_config()
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, revision)

    async with engine.connect() as conn:
        conn = await writer(conn)
        await conn.run_sync(_run)
        await conn.commit()


def upgrade_sqlite(url: str, revision: str = "head") -> None:
    """Apply migrations to a SQLite database synchronously, in one write transaction
    (BEGIN IMMEDIATE): `serve --workers N` does it once before its workers start."""
    engine = sync_sqlite_engine(url)
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(**WRITE)
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            conn.commit()
    finally:
        engine.dispose()


async def current_revision(engine: AsyncEngine) -> str | None:
    def _current(sync_conn: Connection) -> str | None:
        return MigrationContext.configure(sync_conn).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(_current)
