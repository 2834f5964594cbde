"""Read-side use cases shared by the HTTP API and the CLI."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from plivo_tracker.messages import repository as repo
from plivo_tracker.messages import stats
from plivo_tracker.messages.schemas import Message, MessageSummary, build_message, build_summary
from plivo_tracker.messages.status import FAILURES, MessageStatus
from plivo_tracker.plivo.error_codes import describe


async def get_message(engine: AsyncEngine, ref: str) -> Message | None:
    """A message with its parts and full event timeline, by local id or MessageUUID."""
    async with engine.connect() as conn:
        row = await repo.find_message(conn, ref.strip())
        if row is None:
            return None
        parts = await repo.message_parts_of(conn, row["id"])
        events = await repo.message_events(conn, row["id"])
        attempts = await repo.message_attempts(conn, row["id"])
        chain = await repo.resend_chain(conn, row["id"])
    return build_message(row, parts, events, attempts, chain)


async def list_messages(
    engine: AsyncEngine, query: repo.MessageQuery, limit: int
) -> tuple[list[MessageSummary], int | None]:
    """One page of messages, newest first, and the cursor of the next page (None: last page)."""
    async with engine.connect() as conn:
        rows = await repo.list_messages(conn, query, limit + 1)
    page = [build_summary(r) for r in rows[:limit]]
    return page, (page[-1].id if len(rows) > limit else None)


WINDOW_RE = re.compile(r"^(\d{1,5})([mhd])$")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400}
MAX_WINDOW = timedelta(days=90)
SERIES_POINTS = 60


class BadWindow(ValueError):
    """`window` is not <n>m, <n>h or <n>d between a minute and 90 days."""


def parse_window(text: str) -> timedelta:
    match = WINDOW_RE.match(text.strip().lower())
    if match is None:
        raise BadWindow(f"window must look like 15m, 24h or 7d, not {text!r}")
    span = timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])
    if not timedelta(minutes=1) <= span <= MAX_WINDOW:
        raise BadWindow("window must be between 1m and 90d")
    return span


def _rate(delivered: int, failed: int) -> float | None:
    final = delivered + failed
    return round(delivered / final, 4) if final else None


_MINUTE = timedelta(minutes=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def stats_window(span: timedelta, now: datetime) -> stats.Window:
    """The window's whole minutes: `until` is `now` rounded up to a whole minute (so messages
    created in the current minute count), `since` is `span` before it; series points of
    ⌈minutes / SERIES_POINTS⌉ minutes from `since` (windows under an hour: one point a minute)."""
    elapsed = now - _EPOCH
    until = elapsed // _MINUTE + (1 if elapsed % _MINUTE else 0)
    minutes = span // _MINUTE
    return stats.Window(since=until - minutes, until=until, step=-(-minutes // SERIES_POINTS))


def _minute_time(minute: int) -> datetime:
    return _EPOCH + minute * _MINUTE


async def compute_stats(engine: AsyncEngine, window: str, now: datetime) -> dict[str, Any]:
    """GET /api/stats: everything the dashboard charts, for messages created in the window.

    Read from the rollup tables (messages/stats.py), so the window is whole minutes: it ends at
    `now` rounded up to the next whole minute and starts `window` before that; `since` and
    `until` in the answer are those bounds. Latency percentiles are the lower bounds of
    3-significant-digit millisecond buckets (< 1 % below the exact nearest-rank value).
    """
    w = stats_window(parse_window(window), now)
    async with engine.connect() as conn:
        cells = await stats.buckets(conn, w)
        errors = await stats.error_codes(conn, w)
        carriers = await stats.carriers(conn, w)
        latency = await stats.latency(conn, w)
        no_receipt = await stats.no_receipt(conn, _minute_time(w.since), _minute_time(w.until))
    by_status = {s.value: 0 for s in MessageStatus}
    counts = [[0, 0, 0, 0] for _ in range(w.points)]  # total, delivered, failed, inbound
    for index, status, count in cells:
        by_status[status] = by_status.get(status, 0) + count
        cell = counts[index]
        if status == MessageStatus.RECEIVED:
            cell[3] += count  # a message to us: not one whose delivery we track
            continue
        cell[0] += count
        if status == MessageStatus.DELIVERED:
            cell[1] += count
        elif status in _FAILURE_VALUES:
            cell[2] += count
    points = [
        {
            "t": _minute_time(w.since + i * w.step),
            "total": total,
            "delivered": ok,
            "failed": failed,
            "delivery_rate": _rate(ok, failed),
            "inbound": inbound,
        }
        for i, (total, ok, failed, inbound) in enumerate(counts)
    ]
    inbound_total = by_status[MessageStatus.RECEIVED]
    failed_total = sum(by_status[s] for s in _FAILURE_VALUES)
    return {
        "window": window.strip().lower(),
        "since": _minute_time(w.since),
        "until": _minute_time(w.until),
        # Messages whose delivery we track (ours, and those known only from callbacks);
        # messages sent to our numbers are counted apart, under `inbound` (and by_status's
        # "received").
        "total": sum(by_status.values()) - inbound_total,
        "inbound": {"total": inbound_total},
        "by_status": by_status,
        "delivery_rate": _rate(by_status[MessageStatus.DELIVERED], failed_total),
        # Counted in by_status["sent"] too: settled without a receipt (the sweeper).
        "sent_no_receipt": no_receipt,
        "errors": [
            {"code": code, "meaning": _meaning(code), "count": count} for code, count in errors
        ],
        "latency": {
            "time_to_sent": _latency(latency["sent"]),
            "time_to_delivered": _latency(latency["delivered"]),
        },
        "carriers": [{**c, "delivery_rate": _rate(c["delivered"], c["failed"])} for c in carriers],
        "series": {"step_seconds": w.step * 60, "points": points},
    }


_FAILURE_VALUES = frozenset(s.value for s in FAILURES)


def _meaning(code: str) -> str | None:
    info = describe(code)
    return info.meaning if info else None


def _latency(result: tuple[int, list[float | None]]) -> dict[str, Any]:
    count, values = result
    out: dict[str, Any] = {"count": count}
    for p, v in zip(stats.PERCENTILES, values, strict=True):
        out[f"p{p}"] = None if v is None else round(v, 3)
    return out


class StatsCache:
    """Stats per window, computed at most once every `ttl` seconds however many dashboards ask
    (concurrent requests share one computation): a big window scans many rows."""

    def __init__(self, ttl: float = 5.0) -> None:
        self._ttl = ttl
        self._entries: dict[str, tuple[float, asyncio.Future[dict[str, Any]]]] = {}

    async def get(
        self, key: str, compute: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is None or entry[0] < now or (entry[1].done() and entry[1].exception()):
            future = asyncio.ensure_future(compute())
            self._entries[key] = (now + self._ttl, future)
            if len(self._entries) > 64:  # windows are free text: keep the dict small
                self._entries = {key: self._entries[key]}
            entry = self._entries[key]
        return await asyncio.shield(entry[1])
