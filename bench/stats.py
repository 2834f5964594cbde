"""GET /api/stats on a million messages: how long the dashboard's statistics take.

Seeds N messages (default 1,000,000) spread over the last 7 days with realistic outcomes,
timings, error codes and carriers, then times `GET /api/stats?window=…` through the ASGI app
(no cache: each request computes), for several windows. The same-run baseline is the floor of
any aggregate over the same rows: `SELECT count(*)` of the window's rows through the same
engine. Prints one line per database and window.

The seed writes the rows straight into `messages` (plain INSERTs on SQLite, COPY on
PostgreSQL), then counts them in the rollup tables as the projector counts what it applies
(`messages/rollups.Deltas`); "seeded … in" includes both, and the rollups' sizes are printed.

    .venv/bin/python bench/stats.py [--messages 1000000] [--repeat 3]
        [--database-url postgresql+asyncpg://127.0.0.1:5432/plivo_bench_stats]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select

from callbacks import ACCESS_ENV, API_HEADERS
from plivo_tracker.app import create_app
from plivo_tracker.config import load_settings
from plivo_tracker.db.engine import make_engine
from plivo_tracker.db.migrate import upgrade
from plivo_tracker.messages.models import (
    messages,
    stats_carriers,
    stats_errors,
    stats_latency,
    stats_status,
)
from plivo_tracker.messages.rollups import Deltas

COLUMNS = (
    "origin",
    "direction",
    "status",
    "error_code",
    "to_number",
    "from_number",
    "type",
    "mcc",
    "mnc",
    "has_conflict",
    "created_at",
    "updated_at",
    "sent_at",
    "delivered_at",
)
ROLLUPS = ("stats_status", "stats_errors", "stats_carriers", "stats_latency")
CARRIERS = [("310", "260"), ("310", "410"), ("311", "480"), ("302", "720"), ("234", "15")]


def _rows(n: int, now: datetime, seed: int) -> list[tuple[Any, ...]]:
    rng = random.Random(seed)
    span = 7 * 86400
    out = []
    for i in range(n):
        created = now - timedelta(seconds=span * (i / n))  # spread evenly over 7 days
        roll = rng.random()
        status = (
            "delivered"
            if roll < 0.9
            else "undelivered"
            if roll < 0.95
            else "failed"
            if roll < 0.97
            else "sent"
            if roll < 0.99
            else "queued"
        )
        sent = (
            created + timedelta(seconds=rng.lognormvariate(0, 0.6)) if status != "queued" else None
        )
        delivered = (
            sent + timedelta(seconds=rng.lognormvariate(1.5, 0.8))
            if status == "delivered" and sent
            else None
        )
        error = (
            rng.choice(("30", "200", "300", "420", "900"))
            if status in ("undelivered", "failed")
            else None
        )
        mcc, mnc = rng.choice(CARRIERS)
        out.append(
            (
                "api",
                "outbound",
                status,
                error,
                f"+1415{i:07d}",
                "+14155550100",
                "sms",
                mcc,
                mnc,
                False,
                created,
                created,
                sent,
                delivered,
            )
        )
    return out


async def _seed(url: str, rows: list[tuple[Any, ...]]) -> None:
    engine = make_engine(url)
    await upgrade(engine)
    try:
        if url.startswith("postgresql"):
            import asyncpg

            conn = await asyncpg.connect("postgresql://" + url.split("://", 1)[1])
            try:
                rollups = ", ".join(ROLLUPS)
                await conn.execute(f"TRUNCATE messages, {rollups} RESTART IDENTITY CASCADE")
                await conn.copy_records_to_table("messages", records=rows, columns=list(COLUMNS))
            finally:
                await conn.close()
            await _count(engine, rows)
            conn = await asyncpg.connect("postgresql://" + url.split("://", 1)[1])
            try:
                # What autovacuum would soon do, on the messages and the rollups just filled.
                for table in ("messages", *ROLLUPS):
                    await conn.execute(f"VACUUM ANALYZE {table}")
            finally:
                await conn.close()
        else:
            import sqlite3

            db = sqlite3.connect(url.split("///", 1)[1])
            placeholders = ",".join("?" * len(COLUMNS))

            def sqlite_row(r: tuple[Any, ...]) -> tuple[Any, ...]:
                return tuple(
                    v.replace(tzinfo=None).isoformat(sep=" ") if isinstance(v, datetime) else v
                    for v in r
                )

            with db:
                db.execute("DELETE FROM messages")
                for table in ROLLUPS:
                    db.execute(f"DELETE FROM {table}")
                db.executemany(
                    f"INSERT INTO messages ({','.join(COLUMNS)}) VALUES ({placeholders})",
                    (sqlite_row(r) for r in rows),
                )
            db.close()
            await _count(engine, rows)
            db = sqlite3.connect(url.split("///", 1)[1])
            db.execute("ANALYZE")
            db.close()
    finally:
        await engine.dispose()


async def _count(engine: Any, rows: list[tuple[Any, ...]]) -> None:
    """The rows in the statistics, as the projector would have counted them."""
    deltas = Deltas()
    for r in rows:
        deltas.add(dict(zip(COLUMNS, r, strict=True)))
    async with engine.begin() as conn:
        await conn.run_sync(deltas.flush)


async def _sizes(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            tables = (stats_status, stats_errors, stats_carriers, stats_latency)
            counts = [
                (await conn.execute(select(func.count()).select_from(t))).scalar_one()
                for t in tables
            ]
            return {t.name: int(c) for t, c in zip(tables, counts, strict=True)}
    finally:
        await engine.dispose()


async def _baseline(url: str, since: datetime) -> float:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            t0 = time.perf_counter()
            await conn.execute(
                select(func.count()).select_from(messages).where(messages.c.created_at >= since)
            )
            return time.perf_counter() - t0
    finally:
        await engine.dispose()


async def run(url: str, n: int, repeat: int, windows: list[str], workdir: Path) -> list[str]:
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    await _seed(url, _rows(n, now, seed=1))
    lines = [f"seeded {n:,} messages in {time.perf_counter() - t0:.1f} s"]
    lines.append("rollup rows: " + ", ".join(f"{k} {v:,}" for k, v in (await _sizes(url)).items()))
    access: dict[str, Any] = {name.lower(): value for name, value in ACCESS_ENV.items()}
    settings = load_settings(
        database_url=url,
        public_base_url="http://127.0.0.1:8000",
        allow_private_callback_url=True,  # nothing calls back: the URL is never used
        plivo_auth_id="MABENCHBENCHBENCH000",
        plivo_auth_token="bench-token",
        spool_dir=str(workdir / "spool"),
        log_level="warning",
        # The bench key and every rate limit off (bench/callbacks.py): this times the queries.
        **access,
    )
    app = create_app(settings, migrate=False, dispatch=False)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        # A loopback base URL: its Host is one the app answers by default (ALLOWED_HOSTS).
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", headers=API_HEADERS
        ) as client:
            for window in windows:
                times, base = [], []
                total = 0
                for _ in range(repeat):
                    app.state.ctx.stats_cache._entries.clear()  # measure the queries, not the cache
                    t1 = time.perf_counter()
                    resp = await client.get("/api/stats", params={"window": window})
                    times.append(time.perf_counter() - t1)
                    resp.raise_for_status()
                    total = resp.json()["total"]
                    since = datetime.now(UTC) - _span(window)
                    base.append(await _baseline(url, since))
                t_med, b_med = statistics.median(times), statistics.median(base)
                lines.append(
                    f"window={window:>4}  messages in window={total:>9,}  "
                    f"/api/stats median {t_med * 1000:8.1f} ms (min {min(times) * 1000:.1f})  "
                    f"baseline count(*) {b_med * 1000:7.1f} ms  ratio {t_med / b_med:5.1f}x"
                )
    return lines


def _span(window: str) -> timedelta:
    unit = {"m": 60, "h": 3600, "d": 86400}[window[-1]]
    return timedelta(seconds=int(window[:-1]) * unit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--windows", default="1h,24h,7d")
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="plivo-bench-stats-") as tmp:
        workdir = Path(tmp)
        url = args.database_url or f"sqlite+aiosqlite:///{workdir / 'stats.db'}"
        print(f"database: {url.split('://')[0]}")
        for line in asyncio.run(
            run(url, args.messages, args.repeat, args.windows.split(","), workdir)
        ):
            print(line)


if __name__ == "__main__":
    main()
