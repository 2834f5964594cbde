"""Read-only aggregate SQL behind GET /api/stats (a repository under another name).

Four queries over the messages created in the window, each one pass over the
`created_at` index range: counts by time bucket and status (the totals are their sum), error
codes, carriers, and latency percentiles. Percentiles are nearest-rank, computed with the
`cume_dist()` window function in one sort per latency, so SQLite (no percentile function) and
PostgreSQL answer the same numbers. Measured on a million messages in docs/benchmarks.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Float, case, cast, func, literal, select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from plivo_tracker.messages.models import messages
from plivo_tracker.messages.status import FAILURES, MessageStatus

PERCENTILES = (0.5, 0.9, 0.99)
TOP = 20  # error codes and carriers listed
_FAILED = sorted(s.value for s in FAILURES)
_DELIVERED = MessageStatus.DELIVERED.value


def _epoch(dialect: Dialect, col: Any) -> ColumnElement[float]:
    """Seconds since 1970 of a timestamp column, as a float, on either dialect."""
    if dialect.name == "postgresql":
        return cast(func.extract("epoch", col), Float)
    # SQLite stores "YYYY-MM-DD HH:MM:SS.ffffff" (UTC); julianday keeps the fraction.
    return (func.julianday(col) - 2440587.5) * 86400.0


@dataclass(frozen=True, slots=True)
class Window:
    since: datetime
    until: datetime
    step: float  # seconds per series bucket


def _in_window(w: Window) -> list[ColumnElement[bool]]:
    m = messages.c
    return [m.created_at >= w.since, m.created_at < w.until, m.origin != "claim"]


async def buckets(conn: AsyncConnection, w: Window) -> list[tuple[int, str, int]]:
    """(bucket index, status, count) for the window: the series and, summed, the totals."""
    m = messages.c
    start = w.since.timestamp()
    bucket = cast((_epoch(conn.dialect, m.created_at) - literal(start)) / w.step, Float)
    index = func.floor(bucket).label("bucket")
    stmt = select(index, m.status, func.count()).where(*_in_window(w)).group_by(index, m.status)
    return [(int(b), s, int(n)) for b, s, n in await conn.execute(stmt)]


async def error_codes(conn: AsyncConnection, w: Window) -> list[tuple[str, int]]:
    m = messages.c
    n = func.count().label("n")
    stmt = (
        select(m.error_code, n)
        .where(*_in_window(w), m.error_code.is_not(None))
        .group_by(m.error_code)
        .order_by(n.desc(), m.error_code)
        .limit(TOP)
    )
    return [(str(code), int(count)) for code, count in await conn.execute(stmt)]


async def carriers(conn: AsyncConnection, w: Window) -> list[dict[str, Any]]:
    m = messages.c
    n = func.count().label("n")
    delivered = func.sum(case((m.status == _DELIVERED, 1), else_=0))
    failed = func.sum(case((m.status.in_(_FAILED), 1), else_=0))
    stmt = (
        select(m.mcc, m.mnc, n, delivered, failed)
        .where(*_in_window(w), m.mcc.is_not(None))
        .group_by(m.mcc, m.mnc)
        .order_by(n.desc(), m.mcc, m.mnc)
        .limit(TOP)
    )
    return [
        {"mcc": mcc, "mnc": mnc, "total": int(t), "delivered": int(d or 0), "failed": int(f or 0)}
        for mcc, mnc, t, d, f in await conn.execute(stmt)
    ]


async def latency(conn: AsyncConnection, w: Window, column: str) -> tuple[int, list[float | None]]:
    """(count, nearest-rank percentiles) of seconds from our send request to `column`, for the
    messages we sent (callback-only messages have no request time)."""
    m = messages.c
    seconds = (_epoch(conn.dialect, m[column]) - _epoch(conn.dialect, m.created_at)).label("s")
    inner = (
        select(seconds, func.cume_dist().over(order_by=seconds).label("cd"))
        .where(*_in_window(w), m.origin == "api", m[column].is_not(None))
        .subquery()
    )
    picks = [func.min(case((inner.c.cd >= p, inner.c.s))) for p in PERCENTILES]
    row = (await conn.execute(select(func.count(), *picks).select_from(inner))).one()
    count = int(row[0])
    return count, [None if v is None else max(0.0, float(v)) for v in row[1:]]
