"""The statistics rollups on real SQLite and PostgreSQL: whatever is done to `messages`, the
tables kept by `messages/rollups.Deltas` (every writer notes each row before and after, as the
projector does) equal a GROUP BY over `messages` computed directly, and GET /api/stats read from
them equals the same statistics computed from the rows. That the projector notes every change
is checked in tests/integration/test_projector.py."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from plivo_tracker.db.engine import make_engine
from plivo_tracker.db.migrate import alembic_config, upgrade
from plivo_tracker.messages import stats
from plivo_tracker.messages.models import (
    messages,
    stats_carriers,
    stats_errors,
    stats_latency,
    stats_status,
)
from plivo_tracker.messages.rollups import Deltas
from plivo_tracker.messages.service import compute_stats
from plivo_tracker.messages.status import FAILURES, MessageStatus
from plivo_tracker.plivo.error_codes import describe
from tests.conftest import _pg_drop, new_pg_database

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A UTC midnight, so day, hour and minute boundaries are all near.
BASE = datetime(2026, 11, 23, tzinfo=UTC)
ROLLUPS = (stats_status, stats_errors, stats_carriers, stats_latency)
STATUSES = (
    "accepted",
    "queued",
    "sent",
    "delivered",
    "undelivered",
    "failed",
    "rejected",
    "received",  # a message to us: counted apart
)
FAILED = frozenset(s.value for s in FAILURES)

Key = tuple[Any, ...]


# ---- the oracle: the rollups computed in Python from the rows ----------------------------------


def _minute(t: datetime) -> int:
    return (t - EPOCH) // timedelta(minutes=1)


def _latency_ms(row: Any, col: str) -> int:
    return max(0, (getattr(row, col) - row.created_at) // timedelta(milliseconds=1))


def expected_rollups(rows: list[Any]) -> dict[str, Counter[Key]]:
    out: dict[str, Counter[Key]] = {t.name: Counter() for t in ROLLUPS}
    for r in rows:
        if r.origin == "claim":
            continue
        # (table, key, counts): a carrier counts (total, delivered, failed), the others n.
        dims: list[tuple[str, Key, Key]] = [("stats_status", (r.status,), (1,))]
        if r.error_code is not None:
            dims.append(("stats_errors", (r.error_code,), (1,)))
        if r.mcc is not None:
            counts = (1, int(r.status == "delivered"), int(r.status in FAILED))
            dims.append(("stats_carriers", (r.mcc, r.mnc or ""), counts))
        if r.origin == "api":
            for kind, col in (("sent", "sent_at"), ("delivered", "delivered_at")):
                if getattr(r, col) is not None:
                    bucket = stats.bucket_ms(_latency_ms(r, col))
                    dims.append(("stats_latency", (kind, bucket), (1,)))
        minute = _minute(r.created_at)
        for table, key, values in dims:
            for grain in stats.GRAINS:
                for i, v in enumerate(values):
                    out[table][(grain, minute // grain * grain, *key, i)] += v
    return {name: +c for name, c in out.items()}  # + drops zero counts


async def stored_rollups(conn: AsyncConnection) -> dict[str, Counter[Key]]:
    """Every stored count, keyed (grain, minute, *key, counter index); zeros left out."""
    out = {}
    for t in ROLLUPS:
        keys = [c for c in t.c if c.primary_key]
        counters = [c for c in t.c if not c.primary_key]
        stored: Counter[Key] = Counter()
        for row in await conn.execute(select(*keys, *counters)):
            for i, v in enumerate(row[len(keys) :]):
                if v:
                    stored[(*row[: len(keys)], i)] = v
        out[t.name] = stored
    return out


async def all_messages(conn: AsyncConnection) -> list[Any]:
    return list(await conn.execute(select(messages)))


async def assert_rollups_match(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        rows = await all_messages(conn)
        stored = await stored_rollups(conn)
    expected = expected_rollups(rows)
    for name in expected:
        assert stored[name] == expected[name], name


# ---- random changes to messages -----------------------------------------------------------

# Offsets that land on and next to minute, hour and day boundaries, and some in between.
_EDGES = [timedelta(0), timedelta(microseconds=1), -timedelta(microseconds=1)]
OFFSETS = st.one_of(
    st.builds(
        lambda unit, n, edge: unit * n + edge,
        st.sampled_from([timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)]),
        st.integers(-3, 3),
        st.sampled_from(_EDGES),
    ),
    st.timedeltas(min_value=timedelta(days=-3), max_value=timedelta(days=3)),
)
# Latencies around the bucket boundaries (999 ms, 1000 ms, 9999 ms…), negative ones, sub-ms ones.
LATENCIES = st.one_of(
    st.builds(
        lambda ms, us: timedelta(milliseconds=ms, microseconds=us),
        st.sampled_from([-5, 0, 1, 999, 1000, 1009, 1999, 9999, 10000, 12345, 99999, 3_600_000]),
        st.sampled_from([-1, 0, 1, 500, 999]),
    ),
    st.timedeltas(min_value=timedelta(seconds=-1), max_value=timedelta(hours=2)),
)
ERRORS = st.sampled_from([None, None, "30", "200", "900"])
MCCS = st.sampled_from([None, "310", "311"])
MNCS = st.sampled_from([None, "260", "410"])


@st.composite
def new_rows(draw: st.DrawFn) -> dict[str, Any]:
    created = BASE + draw(OFFSETS)
    sent = draw(st.one_of(st.none(), LATENCIES))
    delivered = draw(st.one_of(st.none(), LATENCIES))
    return {
        "origin": draw(st.sampled_from(["api", "api", "callback", "claim"])),
        "direction": "outbound",
        "status": draw(st.sampled_from(STATUSES)),
        "settled_reason": draw(st.sampled_from([None, None, "no_receipt"])),
        "error_code": draw(ERRORS),
        "mcc": draw(MCCS),
        "mnc": draw(MNCS),
        "has_conflict": False,
        "created_at": created,
        "updated_at": created,
        "sent_at": None if sent is None else created + sent,
        "delivered_at": None if delivered is None else created + delivered,
    }


@dataclass(frozen=True)
class Op:
    kind: str
    pick: int  # which existing message (modulo the count)
    values: Any


OPS = st.one_of(
    st.builds(Op, st.just("insert"), st.just(0), st.lists(new_rows(), min_size=1, max_size=4)),
    st.builds(
        Op,
        st.just("callback"),  # what a callback batch writes: status, error, carrier
        st.integers(0, 50),
        st.fixed_dictionaries(
            {"status": st.sampled_from(STATUSES), "error_code": ERRORS},
            optional={"mcc": MCCS, "mnc": MNCS},
        ),
    ),
    st.builds(
        Op,
        st.just("stamp"),
        st.integers(0, 50),
        st.tuples(st.sampled_from(["sent_at", "delivered_at"]), st.one_of(st.none(), LATENCIES)),
    ),
    st.builds(Op, st.just("origin"), st.integers(0, 50), st.sampled_from(["api", "callback"])),
    st.builds(Op, st.just("created_at"), st.integers(0, 50), OFFSETS),
    st.builds(Op, st.just("delete"), st.integers(0, 50), st.none()),
    st.builds(Op, st.just("adopt"), st.integers(0, 50), st.integers(0, 50)),
    st.builds(Op, st.just("noop"), st.integers(0, 50), st.none()),
    st.builds(
        Op,
        st.just("bulk_status"),
        st.just(0),
        st.tuples(st.sampled_from(STATUSES), st.sampled_from(STATUSES)),
    ),
    st.builds(Op, st.just("bulk_delete"), st.just(0), st.sampled_from(STATUSES)),
)


def _apply(conn: Connection, op: Op) -> None:
    """Apply the change, and its difference to the rollups as the projector would note it."""
    before = _rows(conn)
    _change(conn, op)
    deltas = Deltas()
    for row in before:
        deltas.remove(row)
    for row in _rows(conn):
        deltas.add(row)
    deltas.flush(conn)


def _rows(conn: Connection) -> list[Any]:
    return list(conn.execute(select(messages)).mappings())


def _change(conn: Connection, op: Op) -> None:
    m = messages.c
    if op.kind == "insert":  # one statement, several rows (PostgreSQL: one statement trigger)
        conn.execute(messages.insert().values(op.values))
        return
    if op.kind == "bulk_status":  # one UPDATE of many rows
        old, new = op.values
        conn.execute(update(messages).where(m.status == old).values(status=new))
        return
    if op.kind == "bulk_delete":
        conn.execute(delete(messages).where(m.status == op.values))
        return
    ids = list(conn.execute(select(m.id).order_by(m.id)).scalars())
    if not ids:
        return
    target = ids[op.pick % len(ids)]
    row = conn.execute(select(messages).where(m.id == target)).one()
    this = update(messages).where(m.id == target)
    if op.kind == "callback":
        conn.execute(this.values(**op.values))
    elif op.kind == "stamp":
        col, latency = op.values
        conn.execute(this.values({col: None if latency is None else row.created_at + latency}))
    elif op.kind == "origin":
        conn.execute(this.values(origin=op.values))
    elif op.kind == "created_at":
        conn.execute(this.values(created_at=BASE + op.values))
    elif op.kind == "delete":
        conn.execute(delete(messages).where(m.id == target))
    elif op.kind == "adopt":
        # messages/local_changes._adopt: the placeholder's outcome moves onto our message and
        # the placeholder is deleted.
        other = ids[op.values % len(ids)]
        if other == target:
            return
        src = conn.execute(select(messages).where(m.id == other)).one()
        conn.execute(delete(messages).where(m.id.in_([other])))
        moved = ("status", "error_code", "mcc", "mnc", "sent_at", "delivered_at")
        conn.execute(this.values({c: src._mapping[c] for c in moved}))
    elif op.kind == "noop":
        # Every mutable column written back unchanged, as the callback batch does.
        conn.execute(this.values(status=row.status, sent_at=row.sent_at, mcc=row.mcc))


async def _reset(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(delete(messages))
        for t in ROLLUPS:
            await conn.execute(delete(t))


async def _run_ops(url: str, ops: list[Op], windows: list[tuple[str, timedelta]]) -> None:
    engine = make_engine(url)
    try:
        await _reset(engine)
        for op in ops:
            async with engine.begin() as conn:
                await conn.run_sync(_apply, op)
            await assert_rollups_match(engine)
        for window, offset in windows:
            await assert_stats_match(engine, window, BASE + offset)
    finally:
        await engine.dispose()


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ops=st.lists(OPS, min_size=1, max_size=12),
    windows=st.lists(
        st.tuples(st.sampled_from(["1m", "45m", "1h", "90m", "24h", "2d", "7d"]), OFFSETS),
        max_size=2,
    ),
)
def test_rollups_equal_a_group_by_over_messages(
    db_url: str, ops: list[Op], windows: list[tuple[str, timedelta]]
) -> None:
    asyncio.run(_run_ops(db_url, ops, windows))


# ---- GET /api/stats from the rollups = the same statistics from the rows -------------------


async def assert_stats_match(engine: AsyncEngine, window: str, now: datetime) -> None:
    got = await compute_stats(engine, window, now)
    async with engine.connect() as conn:
        rows = await all_messages(conn)
    assert got == direct_stats(rows, window, now)


def direct_stats(rows: list[Any], window: str, now: datetime) -> Any:
    """What compute_stats must answer, from the rows: bounds are whole minutes, `until` is `now`
    rounded up; percentiles are the bucket of the exact nearest-rank value."""
    minute = timedelta(minutes=1)
    until = EPOCH + -(-(now - EPOCH) // minute) * minute
    span = {"m": minute, "h": 60 * minute, "d": 1440 * minute}[window[-1]] * int(window[:-1])
    since = until - span
    step = -(-(span // minute) // 60) * minute
    inside = [r for r in rows if since <= r.created_at < until and r.origin != "claim"]
    by_status = Counter(r.status for r in inside)
    n_points = -(-span // step)
    points = [[0, 0, 0, 0] for _ in range(n_points)]
    for r in inside:
        p = points[(r.created_at - since) // step]
        if r.status == "received":
            p[3] += 1
            continue
        p[0] += 1
        p[1] += r.status == "delivered"
        p[2] += r.status in FAILED
    errors = Counter(r.error_code for r in inside if r.error_code is not None)
    carriers: dict[tuple[str, str], list[int]] = {}
    for r in inside:
        if r.mcc is not None:
            c = carriers.setdefault((r.mcc, r.mnc or ""), [0, 0, 0])
            c[0] += 1
            c[1] += r.status == "delivered"
            c[2] += r.status in FAILED

    def rate(ok: int, failed: int) -> float | None:
        return round(ok / (ok + failed), 4) if ok + failed else None

    def latency(col: str) -> dict[str, Any]:
        stamped = [r for r in inside if r.origin == "api" and getattr(r, col) is not None]
        values = sorted(_latency_ms(r, col) for r in stamped)
        out: dict[str, Any] = {"count": len(values)}
        for pct in stats.PERCENTILES:
            rank = -(-pct * len(values) // 100)
            out[f"p{pct}"] = stats.bucket_ms(values[rank - 1]) / 1000 if values else None
        return out

    delivered = by_status["delivered"]
    failed = sum(by_status[s] for s in FAILED)
    top_errors = sorted(errors.items(), key=lambda e: (-e[1], e[0]))[: stats.TOP]
    top_carriers = sorted(carriers.items(), key=lambda c: (-c[1][0], c[0]))[: stats.TOP]
    return {
        "window": window,
        "since": since,
        "until": until,
        "total": len(inside) - by_status["received"],
        "inbound": {"total": by_status["received"]},
        "by_status": {s.value: by_status[s.value] for s in MessageStatus},
        "delivery_rate": rate(delivered, failed),
        "sent_no_receipt": sum(
            1 for r in inside if r.status == "sent" and r.settled_reason == "no_receipt"
        ),
        "errors": [
            {"code": code, "meaning": describe(code).meaning, "count": n}  # type: ignore[union-attr]
            for code, n in top_errors
        ],
        "latency": {
            "time_to_sent": latency("sent_at"),
            "time_to_delivered": latency("delivered_at"),
        },
        "carriers": [
            {
                "mcc": mcc,
                "mnc": mnc or None,
                "total": t,
                "delivered": d,
                "failed": f,
                "delivery_rate": rate(d, f),
            }
            for (mcc, mnc), (t, d, f) in top_carriers
        ],
        "series": {
            "step_seconds": step // timedelta(seconds=1),
            "points": [
                {
                    "t": since + i * step,
                    "total": t,
                    "delivered": d,
                    "failed": f,
                    "delivery_rate": rate(d, f),
                    "inbound": n,
                }
                for i, (t, d, f, n) in enumerate(points)
            ],
        },
    }


def test_bucket_rule() -> None:
    cases = {-7: 0, 0: 0, 7: 7, 999: 999, 1000: 1000, 1009: 1000, 1999: 1990, 12345: 12300}
    cases |= {99999: 99900, 100_000: 100_000, 123_456_789: 123_000_000}
    assert {ms: stats.bucket_ms(ms) for ms in cases} == cases


def test_cover_uses_the_coarsest_rows() -> None:
    day, hour = 1440, 60
    lo, hi = 3 * day - 61, 10 * day + hour + 5  # 61 minutes before a midnight … 1h05 after one
    assert stats.cover(lo, hi) == [
        (1, lo, lo + 1),
        (60, lo + 1, 3 * day),
        (1440, 3 * day, 10 * day),
        (60, 10 * day, 10 * day + hour),
        (1, 10 * day + hour, hi),
    ]
    assert stats.cover(5, 5) == []
    assert stats.cover(5, 59) == [(1, 5, 59)]
    # Series points: no row may straddle a point boundary.
    pieces = stats.cover_points([0, 90, 180])
    assert pieces == [(1, 60, 120), (60, 0, 60), (60, 120, 180)]


# ---- the migration's backfill ----------------------------------------------------------------


async def _migrate(url: str, revision: str) -> None:
    engine = make_engine(url)
    try:
        if revision == "head":
            await upgrade(engine)
            return

        def down(sync_conn: Connection) -> None:
            cfg = alembic_config()
            cfg.attributes["connection"] = sync_conn
            command.downgrade(cfg, revision)

        async with engine.begin() as conn:
            await conn.run_sync(down)
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def own_db_url(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    """A database of this test's own (it migrates down and up again)."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'backfill.db'}"
        asyncio.run(_migrate(url, "head"))
        yield url
        return
    url = new_pg_database()
    yield url
    asyncio.run(_pg_drop(url.rsplit("/", 1)[1]))


@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(new_rows(), min_size=1, max_size=40))
def test_migration_backfills_the_rollups(own_db_url: str, rows: list[dict[str, Any]]) -> None:
    async def scenario() -> None:
        await _migrate(own_db_url, "0003")
        engine = make_engine(own_db_url)
        # Only the columns revision 0003 has (settled_reason came later: always NULL then).
        old_rows = [{k: v for k, v in r.items() if k != "settled_reason"} for r in rows]
        try:
            async with engine.begin() as conn:
                await conn.execute(delete(messages))
                await conn.execute(messages.insert(), old_rows)
        finally:
            await engine.dispose()
        await _migrate(own_db_url, "head")
        engine = make_engine(own_db_url)
        try:
            await assert_rollups_match(engine)
        finally:
            await engine.dispose()

    asyncio.run(scenario())
