"""Shared metadata (with stable constraint names on both dialects) and column types."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Float, Integer, LargeBinary, MetaData, Text
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.types import TypeDecorator

# Named constraints keep Alembic batch migrations on SQLite and plain ones on PostgreSQL in step.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only auto-increments an "INTEGER PRIMARY KEY"; PostgreSQL gets a 64-bit identity.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")
# The largest id either can hold (signed 64-bit): a larger number in a query fails the query.
MAX_ID = 2**63 - 1


@compiles(Text, "mysql")
def _mariadb_text(_type: Text, _compiler: Any, **_kw: Any) -> str:
    """Unbounded text (payloads, message texts, stored answers) is MEDIUMTEXT on MariaDB: its
    TEXT holds 64 KiB, less than a body PostgreSQL and SQLite keep whole."""
    return "MEDIUMTEXT"


@compiles(Float, "mysql")
def _mariadb_double(_type: Float[Any], _compiler: Any, **_kw: Any) -> str:
    """Floats as DOUBLE on MariaDB, as PostgreSQL and SQLite store them: its FLOAT is single
    precision, which keeps an epoch time (the rate limiter's) only to about two minutes."""
    return "DOUBLE"


@compiles(LargeBinary, "mysql")
def _mariadb_blob(_type: LargeBinary, _compiler: Any, **_kw: Any) -> str:
    """Raw bodies (the quarantine) as MEDIUMBLOB: a BLOB holds 65,535 bytes, one short of the
    64 KiB body the server accepts."""
    return "MEDIUMBLOB"


# Dialects that store naive timestamps: the value written is UTC without its tzinfo.
NAIVE_TIME_DIALECTS = ("sqlite", "mysql")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every dialect (SQLite and MariaDB store them naive, in
    UTC; MariaDB as DATETIME(6), with microseconds, where plain DATETIME keeps whole seconds)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "mysql":
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return super().load_dialect_impl(dialect)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name in NAIVE_TIME_DIALECTS else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
