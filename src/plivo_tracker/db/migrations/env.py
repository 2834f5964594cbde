"""Alembic environment: one linear history for SQLite (batch mode), PostgreSQL and MariaDB."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection

from plivo_tracker.db.base import metadata
from plivo_tracker.db.engine import make_engine, writer
from plivo_tracker.messages import models  # noqa: F401  (registers the tables on metadata)
from plivo_tracker.optouts import models as optout_models  # noqa: F401  (the same)

config = context.config


def _binary_text(connection: Connection) -> None:
    """MariaDB: the database's default collation made byte-exact before any table is created
    (tables take it): the server's usual utf8mb4_general_ci compares case-insensitively and
    ignores trailing spaces, so two idempotency keys or nonces differing in case would count
    as one. utf8mb4_nopad_bin compares code points, as PostgreSQL's unique indexes and SQLite
    do."""
    if connection.dialect.name != "mysql":
        return
    current = connection.exec_driver_sql(
        "SELECT default_character_set_name, default_collation_name FROM "
        "information_schema.schemata WHERE schema_name = DATABASE()"
    ).one()
    if tuple(current) != ("utf8mb4", "utf8mb4_nopad_bin"):
        connection.exec_driver_sql("ALTER DATABASE CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin")


def _run(connection: Connection) -> None:
    _binary_text(connection)
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = make_engine(url)
    async with engine.connect() as conn:
        conn = await writer(conn)
        await conn.run_sync(_run)
        await conn.commit()
    await engine.dispose()


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        from plivo_tracker.config import load_settings

        url = load_settings().database_url
    return url


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        asyncio.run(_run_async(_url()))
