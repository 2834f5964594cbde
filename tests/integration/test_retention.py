"""The retention purge on real SQLite and PostgreSQL: what goes, what stays (ages at the
boundary, unsettled messages, resend chains), dry runs, the statistics left alone, ids never
reused, and one purge per interval across processes."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, select
from sqlalchemy.ext.asyncio import AsyncEngine

from plivo_tracker.db.engine import Writer, make_writer
from plivo_tracker.messages.models import journal, leases, status_events
from plivo_tracker.retention.purger import Purger, PurgeResult
from plivo_tracker.retention.rules import EPOCH
from tests.integration.test_stats_rollup import (
    ROLLUPS,
    all_messages,
    expected_rollups,
    stored_rollups,
)
from tests.old_data import (
    add_idempotency_key,
    add_journal_row,
    add_message,
    add_nonce,
    add_quarantine,
    ids,
    row_counts,
    utcnow,
)

DAY = timedelta(days=1)
RETENTION = timedelta(days=90)
NOW = utcnow()
OLD = timedelta(days=120)
YOUNG = timedelta(days=10)


@pytest.fixture
async def writer(engine: AsyncEngine) -> AsyncIterator[Writer]:
    w = make_writer(engine)
    yield w
    await w.close()


def purger(writer: Writer, batch_size: int = 500, **kw: Any) -> Purger:
    return Purger(
        writer,
        retention=RETENTION,
        stats_retention=timedelta(days=400),
        batch_size=batch_size,
        **kw,
    )


async def seed(engine: AsyncEngine, fn: Callable[[Connection], Any]) -> Any:
    async with engine.begin() as conn:
        return await conn.run_sync(fn)


async def read(engine: AsyncEngine, fn: Callable[[Connection], Any]) -> Any:
    async with engine.connect() as conn:
        return await conn.run_sync(fn)


async def purge(writer: Writer, batch_size: int = 500, **kw: Any) -> PurgeResult:
    result = await purger(writer, batch_size).run_once(now=NOW, **kw)
    assert result is not None
    return result


@pytest.mark.parametrize("batch_size", [1, 3, 500])
async def test_settled_old_messages_go_with_their_history_and_nothing_else(
    engine: AsyncEngine, writer: Writer, batch_size: int
) -> None:
    def fill(conn: Connection) -> tuple[set[int], set[int]]:
        gone = {
            add_message(conn, NOW, OLD, "delivered", parts=2),
            add_message(conn, NOW, OLD, "undelivered", error_code="30"),
            add_message(conn, NOW, OLD, "failed", outbox_state="failed", events=1),
            add_message(conn, NOW, OLD, "sent", settled_reason="no_receipt"),
            add_message(conn, NOW, OLD, "delivered", origin="callback", outbox_state=None),
            add_message(conn, NOW, RETENTION + timedelta(seconds=1), "read"),
        }
        kept = {
            add_message(conn, NOW, OLD, "queued"),  # Plivo has it, no final status yet
            add_message(conn, NOW, OLD, "sent"),  # may still get a receipt
            add_message(conn, NOW, OLD, "accepted", outbox_state="pending", events=1),
            add_message(conn, NOW, OLD, "accepted", outbox_state="reconcile", events=1),
            add_message(conn, NOW, OLD, "unknown", outbox_state="unknown", events=1),
            add_message(conn, NOW, OLD, "delivered", outbox_state="sending"),
            add_message(conn, NOW, OLD, "queued", origin="callback", outbox_state=None),
            add_message(conn, NOW, OLD, "delivered", changed_age=YOUNG),  # a late callback
            add_message(conn, NOW, RETENTION, "delivered"),  # exactly at the cut-off
            add_message(conn, NOW, YOUNG, "delivered"),
        }
        return gone, kept

    gone, kept = await seed(engine, fill)
    before = await read(engine, row_counts)
    result = await purge(writer, batch_size)
    assert await read(engine, ids) == kept
    after = await read(engine, row_counts)
    deleted = {t: before[t] - after[t] for t in before}
    assert result.counts() == deleted
    assert deleted["messages"] == len(gone)
    assert deleted["status_events"] == 3 + 3 + 1 + 3 + 3 + 3
    assert deleted["message_parts"] == 2
    assert deleted["send_attempts"] == len(gone) - 1  # the callback-only message has none
    assert deleted["outbox"] == len(gone) - 1
    assert result.kept == 8  # the old ones that stay; the young and the boundary one are newer
    assert all(deleted[t.name] == 0 for t in ROLLUPS)  # nothing 400 days old


async def test_resend_chains_go_only_as_a_whole(engine: AsyncEngine, writer: Writer) -> None:
    def fill(conn: Connection) -> tuple[set[int], set[int]]:
        a = add_message(conn, NOW, OLD, "undelivered", error_code="80")
        b = add_message(conn, NOW, OLD - DAY, "undelivered", attempt_of=a, error_code="80")
        c = add_message(conn, NOW, OLD - 2 * DAY, "delivered", attempt_of=b)
        # An old failure whose resend waits in the outbox: neither goes.
        d = add_message(conn, NOW, OLD, "undelivered", error_code="80")
        e = add_message(conn, NOW, OLD, "accepted", attempt_of=d, outbox_state="pending")
        # An old failure whose resend is young: neither goes.
        f = add_message(conn, NOW, OLD, "undelivered", error_code="80")
        g = add_message(conn, NOW, YOUNG, "delivered", attempt_of=f)
        newest = add_message(conn, NOW, timedelta(0), "queued")
        return {a, b, c}, {d, e, f, g, newest}

    gone, kept = await seed(engine, fill)
    result = await purge(writer, batch_size=1)  # chains reach past the batch and its cursor
    assert await read(engine, ids) == kept
    assert result.counts()["messages"] == len(gone)
    assert result.kept == 3  # d, e, f (g is young)


async def test_dry_run_counts_what_the_purge_deletes_and_deletes_nothing(
    engine: AsyncEngine, writer: Writer
) -> None:
    def fill(conn: Connection) -> None:
        for _ in range(7):
            add_message(conn, NOW, OLD, "delivered", parts=1)
        a = add_message(conn, NOW, OLD, "failed", error_code="80")
        b = add_message(conn, NOW, OLD - DAY, "failed", attempt_of=a, error_code="80")
        add_message(conn, NOW, OLD - 2 * DAY, "delivered", attempt_of=b)
        add_message(conn, NOW, OLD, "queued")
        add_message(conn, NOW, YOUNG, "delivered")
        for age in (OLD, OLD, YOUNG, 2 * DAY):
            add_nonce(conn, NOW, age)
            add_idempotency_key(conn, NOW, age)
            add_quarantine(conn, NOW, age)

    await seed(engine, fill)
    before = await read(engine, row_counts)
    dry = await purge(writer, batch_size=2, dry_run=True)
    assert await read(engine, row_counts) == before
    assert dry.dry_run
    assert dry.counts()["messages"] == 10
    real = await purge(writer, batch_size=2)
    assert real.counts() == dry.counts()
    assert real.kept == dry.kept == 1
    after = await read(engine, row_counts)
    assert {t: before[t] - after[t] for t in before} == real.counts()


async def test_nonces_and_idempotency_keys_stay_at_least_a_day(
    engine: AsyncEngine, writer: Writer
) -> None:
    def fill(conn: Connection) -> dict[str, str]:
        return {
            "nonce_2h": add_nonce(conn, NOW, timedelta(hours=2)),
            "nonce_2d": add_nonce(conn, NOW, 2 * DAY),
            "key_2h": add_idempotency_key(conn, NOW, timedelta(hours=2)),
            "key_2d": add_idempotency_key(conn, NOW, 2 * DAY),
            "quarantine_2h": str(add_quarantine(conn, NOW, timedelta(hours=2))),
            "quarantine_30m": str(add_quarantine(conn, NOW, timedelta(minutes=30))),
        }

    await seed(engine, fill)
    result = await purge(writer, older_than=timedelta(hours=1))
    counts = result.counts()
    assert counts["callback_nonces"] == 1  # the 2-day-old one: a day is the least kept
    assert counts["idempotency_keys"] == 1
    assert counts["quarantine"] == 1  # the quarantine follows --older-than itself
    left = await read(engine, row_counts)
    assert left["callback_nonces"] == left["idempotency_keys"] == left["quarantine"] == 1


async def test_journal_rows_go_only_once_applied_and_never_the_cursors_own(
    engine: AsyncEngine, writer: Writer
) -> None:
    """Applied reports older than the replay guard go; the row at the cursor stays (SQLite
    draws new ids above the largest left), and no report not yet applied ever goes."""

    def fill(conn: Connection) -> list[int]:
        applied = [add_journal_row(conn, NOW, 3 * DAY, applied=True) for _ in range(3)]
        waiting = add_journal_row(conn, NOW, 3 * DAY, applied=False)
        young = add_journal_row(conn, NOW, timedelta(hours=2), applied=False)
        return [*applied, waiting, young]

    a, b, cursor, waiting, young = await seed(engine, fill)
    result = await purge(writer, older_than=timedelta(hours=1))
    assert result.counts()["journal"] == 2
    left = await read(engine, lambda conn: set(conn.execute(select(journal.c.id)).scalars().all()))
    assert left == {cursor, waiting, young}
    assert not left & {a, b}


async def test_purging_messages_leaves_the_statistics_alone(
    engine: AsyncEngine, writer: Writer
) -> None:
    def fill(conn: Connection) -> None:
        for status in ("delivered", "undelivered", "failed", "delivered"):
            add_message(conn, NOW, OLD, status, error_code="30" if status != "delivered" else None)
        add_message(conn, NOW, YOUNG, "delivered")

    await seed(engine, fill)
    async with engine.connect() as conn:
        rollups = await stored_rollups(conn)
        rows = await all_messages(conn)
    assert rollups == expected_rollups(rows)
    result = await purge(writer)
    assert result.counts()["messages"] == 4
    async with engine.connect() as conn:
        assert await stored_rollups(conn) == rollups


async def test_statistics_go_after_their_own_retention(engine: AsyncEngine, writer: Writer) -> None:
    def fill(conn: Connection) -> None:
        add_message(conn, NOW, timedelta(days=500), "delivered", error_code=None)
        add_message(conn, NOW, timedelta(days=200), "undelivered", error_code="30")
        add_message(conn, NOW, YOUNG, "delivered")

    await seed(engine, fill)
    async with engine.connect() as conn:
        before = await stored_rollups(conn)
    result = await purge(writer)
    async with engine.connect() as conn:
        after = await stored_rollups(conn)
    # A row (grain, minute) covers [minute, minute + grain): it goes when that ends before the
    # statistics' cut-off, 400 days back; the 200-day-old message's rows stay without it.
    cutoff = (NOW - timedelta(days=400) - EPOCH) // timedelta(minutes=1)
    assert after == {
        name: Counter({k: n for k, n in counts.items() if k[1] + k[0] > cutoff})
        for name, counts in before.items()
    }
    assert result.counts()["stats_status"] == 3  # the 500-day-old message, at 3 grains
    assert result.counts()["stats_carriers"] == 3
    assert result.counts()["stats_errors"] == 0
    assert result.counts()["messages"] == 2
    assert sum(len(c) for c in after.values()) > 0


async def test_ids_are_never_handed_out_twice(engine: AsyncEngine, writer: Writer) -> None:
    """Everything is old and settled: the newest message (and the message of the newest event)
    stay, so SQLite never gives a deleted id to a new row."""

    def fill(conn: Connection) -> tuple[int, int]:
        for _ in range(3):
            newest = add_message(conn, NOW, OLD, "delivered")
        top = conn.execute(select(status_events.c.id).order_by(status_events.c.id.desc())).first()
        assert top is not None
        return newest, int(top[0])

    newest, top_event = await seed(engine, fill)
    result = await purge(writer)
    assert result.counts()["messages"] == 2
    assert await read(engine, ids) == {newest}
    fresh = await seed(engine, lambda conn: add_message(conn, NOW, timedelta(0), "queued"))
    assert fresh > newest
    events = await read(
        engine, lambda conn: list(conn.execute(select(status_events.c.id)).scalars())
    )
    assert top_event in events  # the newest event stayed with its message
    assert max(events) > top_event  # and the fresh message's events come after it


async def test_one_purge_per_interval_across_processes(engine: AsyncEngine, writer: Writer) -> None:
    def fill(conn: Connection) -> None:
        for _ in range(3):
            add_message(conn, NOW, OLD, "delivered")
        add_message(conn, NOW, YOUNG, "delivered")

    await seed(engine, fill)
    other_writer = make_writer(engine)
    try:
        first = purger(writer, interval=3600)
        second = purger(other_writer, interval=3600)  # another process
        done = await first.run_once(now=NOW)
        assert done is not None
        assert done.counts()["messages"] == 3
        assert await second.run_once(now=NOW + timedelta(minutes=1)) is None  # not due
        assert await first.run_once(now=NOW + timedelta(minutes=2)) is None  # not even for it
        later = await second.run_once(now=NOW + timedelta(hours=1, minutes=1))
        assert later is not None  # due again: whoever comes first
        owner = await read(engine, lambda conn: conn.execute(select(leases.c.owner)).scalar())
        assert owner is not None
        assert owner.startswith("purge-")
    finally:
        await other_writer.close()


async def test_background_batches_leave_later_commits_durable(
    engine: AsyncEngine, writer: Writer
) -> None:
    """The purge's COMMITs skip the disk wait; the writer's next transaction (a callback batch)
    is as durable as ever: SQLite back at synchronous=FULL, PostgreSQL at synchronous_commit=on.
    MariaDB has no setting for one transaction: its commits always flush (the server's
    innodb_flush_log_at_trx_commit=1), the purge's too."""
    sqlite = engine.dialect.name == "sqlite"
    if engine.dialect.name == "mysql":
        flush = "SELECT @@innodb_flush_log_at_trx_commit"
        during = await writer.run(
            lambda conn: conn.exec_driver_sql(flush).scalar(), background=True
        )
        after = await writer.run(lambda conn: conn.exec_driver_sql(flush).scalar())
        assert (during, after) == (1, 1)
        return
    show = "PRAGMA synchronous" if sqlite else "SHOW synchronous_commit"

    def setting(conn: Connection) -> Any:
        return conn.exec_driver_sql(show).scalar()

    during = await writer.run(setting, background=True)
    after = await writer.run(setting)
    if sqlite:
        assert (during, after) == (1, 2)  # NORMAL inside the purge's batch, FULL after it
    else:
        assert (during, after) == ("off", "on")
