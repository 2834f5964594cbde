"""Read-only aggregate SQL behind GET /api/stats (a repository under another name).

Reads only the rollup tables (`stats_status`, `stats_errors`, `stats_carriers`, `stats_latency`
in messages/models.py), which triggers on `messages` keep up to date (migration 0004). Every
rollup row counts the messages created in one block of `grain` minutes (1, 60 or 1440) starting
at `minute` (minutes since 1970 UTC). A range of whole minutes is read as whole days, the hours
around them and the minutes around those (`cover`), so a window reads at most a few hundred rows
per key whatever the number of messages. Percentiles are nearest-rank over the latency histogram:
the lower bound of the bucket holding the rank (< 1 % below the exact value, see `bucket_ms`).
Measured on a million messages in docs/benchmarks.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import Any

from sqlalchemy import Subquery, Table, func, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from plivo_tracker.messages.models import (
    messages,
    stats_carriers,
    stats_errors,
    stats_latency,
    stats_status,
)

PERCENTILES = (50, 90, 99)
TOP = 20  # error codes and carriers listed
GRAINS = (1440, 60, 1)  # minutes per rollup row: days, hours, minutes
LATENCY_KINDS = ("sent", "delivered")
_CARRIER_COUNTS = ("total", "delivered", "failed")

Piece = tuple[int, int, int]  # (grain, first minute, end minute): rollup rows to read


def cover(lo: int, hi: int, grains: Sequence[int] = GRAINS) -> list[Piece]:
    """The fewest rollup rows per key that add up to the minutes [lo, hi): whole days, then
    whole hours on either side of them, then single minutes on either side of those."""
    if lo >= hi:
        return []
    grain, rest = grains[0], grains[1:]
    if not rest:
        return [(grain, lo, hi)]
    first, end = -(-lo // grain) * grain, hi // grain * grain
    if first >= end:
        return cover(lo, hi, rest)
    return [*cover(lo, first, rest), (grain, first, end), *cover(end, hi, rest)]


def cover_points(bounds: Sequence[int]) -> list[Piece]:
    """`cover` of each interval between consecutive bounds (no row straddles a bound), with
    touching pieces of one grain merged."""
    pieces = sorted(p for a, b in pairwise(bounds) for p in cover(a, b))
    merged: list[Piece] = []
    for grain, a, b in pieces:
        if merged and merged[-1][0] == grain and merged[-1][2] == a:
            merged[-1] = (grain, merged[-1][1], b)
        else:
            merged.append((grain, a, b))
    return merged


def _rows(table: Table, pieces: Sequence[Piece], *cols: str) -> Subquery:
    """`cols` of the rollup rows of `pieces`: one index range each, UNION ALL (an OR of the
    ranges makes SQLite deduplicate the rows it reads, which costs more than reading them)."""
    t = table.c
    parts = [
        select(*(t[c] for c in cols)).where(t.grain == g, t.minute >= a, t.minute < b)
        for g, a, b in pieces
    ]
    return (parts[0] if len(parts) == 1 else union_all(*parts)).subquery()


@dataclass(frozen=True, slots=True)
class Window:
    """The minutes [since, until) since 1970 UTC, in series points of `step` minutes."""

    since: int
    until: int
    step: int

    @property
    def points(self) -> int:
        return -(-(self.until - self.since) // self.step)

    def bounds(self) -> list[int]:
        """Series point boundaries; the last point ends at `until` (it may be shorter)."""
        return [*range(self.since, self.until, self.step), self.until]


async def buckets(conn: AsyncConnection, w: Window) -> list[tuple[int, str, int]]:
    """(series point index, status, count) for the window: the series and, summed, the totals."""
    t = _rows(stats_status, cover_points(w.bounds()), "minute", "status", "n").c
    index = ((t.minute - w.since) // w.step).label("point")
    stmt = select(index, t.status, func.sum(t.n)).group_by(index, t.status)
    return [(int(i), s, int(n)) for i, s, n in await conn.execute(stmt) if n]


async def no_receipt(conn: AsyncConnection, since: datetime, until: datetime) -> int:
    """Messages created in [since, until) that settled as "sent, no receipt" (few: an index
    range on settled_reason, not a scan of the window)."""
    stmt = select(func.count()).where(
        messages.c.settled_reason == "no_receipt",
        messages.c.status == "sent",
        messages.c.created_at >= since,
        messages.c.created_at < until,
    )
    return int((await conn.execute(stmt)).scalar_one())


async def error_codes(conn: AsyncConnection, w: Window) -> list[tuple[str, int]]:
    t = _rows(stats_errors, cover(w.since, w.until), "error_code", "n").c
    n = func.sum(t.n).label("count")
    stmt = (
        select(t.error_code, n)
        .group_by(t.error_code)
        .having(n > 0)
        .order_by(n.desc(), t.error_code)
        .limit(TOP)
    )
    return [(str(code), int(count)) for code, count in await conn.execute(stmt)]


async def carriers(conn: AsyncConnection, w: Window) -> list[dict[str, Any]]:
    t = _rows(stats_carriers, cover(w.since, w.until), "mcc", "mnc", *_CARRIER_COUNTS).c
    total, delivered, failed = (func.sum(t[c]).label(c) for c in _CARRIER_COUNTS)
    stmt = (
        select(t.mcc, t.mnc, total, delivered, failed)
        .group_by(t.mcc, t.mnc)
        .having(total > 0)
        .order_by(total.desc(), t.mcc, t.mnc)
        .limit(TOP)
    )
    return [
        {
            "mcc": mcc,
            "mnc": mnc or None,  # stored as '' when the carrier sent none
            "total": int(n),
            "delivered": int(d),
            "failed": int(f),
        }
        for mcc, mnc, n, d, f in await conn.execute(stmt)
    ]


async def latency(conn: AsyncConnection, w: Window) -> dict[str, tuple[int, list[float | None]]]:
    """Per kind ("sent", "delivered"): (count, nearest-rank percentiles in seconds) of the time
    from our send request to sent_at / delivered_at, for the messages we sent."""
    t = _rows(stats_latency, cover(w.since, w.until), "kind", "bucket_ms", "n").c
    stmt = (
        select(t.kind, t.bucket_ms, func.sum(t.n))
        .group_by(t.kind, t.bucket_ms)
        .order_by(t.kind, t.bucket_ms)
    )
    histograms: dict[str, list[tuple[int, int]]] = {kind: [] for kind in LATENCY_KINDS}
    for kind, bucket, n in await conn.execute(stmt):
        if n and kind in histograms:
            histograms[kind].append((int(bucket), int(n)))
    return {kind: percentiles(h) for kind, h in histograms.items()}


def percentiles(histogram: Sequence[tuple[int, int]]) -> tuple[int, list[float | None]]:
    """(count, [seconds per PERCENTILES]) from (bucket_ms, n) pairs in ascending bucket order:
    the nearest rank ⌈p·count⌉ (exact integer arithmetic), reported as its bucket's lower bound."""
    count = sum(n for _, n in histogram)
    out: list[float | None] = []
    for pct in PERCENTILES:
        if not count:
            out.append(None)
            continue
        rank, seen = -(-pct * count // 100), 0
        for bucket, n in histogram:
            seen += n
            if seen >= rank:
                out.append(bucket / 1000)
                break
    return count, out


def bucket_ms(ms: int) -> int:
    """The latency bucket of `ms` milliseconds, as the triggers compute it: negative → 0, exact
    below 1000 ms, else rounded down to 3 significant digits."""
    ms = max(0, ms)
    scale: int = 10 ** max(0, len(str(ms)) - 3)
    return ms // scale * scale
