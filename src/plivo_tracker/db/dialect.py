"""The dialect seam: the only place (with engine.py) that asks "SQLite or PostgreSQL?"."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect


def insert_ignore(dialect: Dialect, table: Table, conflict_cols: Sequence[str]) -> Any:
    """INSERT … ON CONFLICT (cols) DO NOTHING for the given dialect."""
    mod: Any = postgresql if dialect.name == "postgresql" else sqlite
    return mod.insert(table).on_conflict_do_nothing(index_elements=list(conflict_cols))


def lock_for_update(dialect: Dialect, stmt: Select[Any]) -> Select[Any]:
    """Row locks on PostgreSQL; SQLite already holds the database write lock (BEGIN IMMEDIATE)."""
    if dialect.name == "postgresql":
        return stmt.with_for_update()
    return stmt
