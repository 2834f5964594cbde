"""Deadlocks on the server databases. InnoDB takes its row locks as it reads rows and locks
unique-index gaps, so two writers meeting in opposite orders is a normal event on MariaDB (and
can happen on PostgreSQL): the server rolls one back, and the writer runs it again. And the
projector's lock of messages by UUID reads only the rows it locks, never a message being
inserted meanwhile (that wait deadlocked a send on MariaDB with two workers)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import DBAPIError

from plivo_tracker.db import engine as engine_module
from plivo_tracker.db.engine import deadlocked, make_engine, make_writer
from plivo_tracker.messages.models import messages
from plivo_tracker.messages.writes import lock_messages_by_uuid
from tests.conftest import server_database

UUID = "3a9e4b52-6c1d-11ef-9f0e-0242ac120003"


@pytest.fixture(params=["postgresql", "mariadb"])
def server_url(request: pytest.FixtureRequest) -> Iterator[str]:
    with server_database(request.param) as url:
        yield url


def _sleep(conn: Connection, seconds: float) -> None:
    fn = "pg_sleep" if conn.dialect.name == "postgresql" else "SLEEP"
    conn.exec_driver_sql(f"SELECT {fn}({seconds})")


def _lock(conn: Connection, name: str) -> None:
    conn.exec_driver_sql(f"SELECT name FROM order_locks WHERE name = '{name}' FOR UPDATE")


def _crossing(attempts: dict[str, int]) -> tuple[object, object]:
    """Two transactions that lock the same two rows in opposite orders, each waiting long
    enough for the other to take its first lock: one of them is a deadlock's victim."""

    def one(first: str, second: str) -> object:
        def fn(conn: Connection) -> str:
            attempts[first] += 1  # observed by the test: how often the writer ran it
            _lock(conn, first)
            _sleep(conn, 0.3)
            _lock(conn, second)
            return first

        return fn

    return one("events", "journal"), one("journal", "events")


async def test_a_deadlocks_victim_is_run_again(server_url: str) -> None:
    engine = make_engine(server_url)
    writer = make_writer(engine)
    attempts = {"events": 0, "journal": 0}
    a, b = _crossing(attempts)
    try:
        done = await asyncio.gather(writer.run(a), writer.run(b))  # type: ignore[arg-type]
    finally:
        await writer.close()
        await engine.dispose()
    assert sorted(done) == ["events", "journal"]  # both committed
    assert sorted(attempts.values()) == [1, 2]  # the victim ran twice, the other once


async def test_without_a_second_run_the_victim_fails_as_a_deadlock(
    server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the retry hides: the server's error, recognised as a deadlock on both servers."""
    monkeypatch.setattr(engine_module, "DEADLOCK_ATTEMPTS", 1)
    engine = make_engine(server_url)
    writer = make_writer(engine)
    a, b = _crossing({"events": 0, "journal": 0})
    try:
        done = await asyncio.gather(
            writer.run(a),  # type: ignore[arg-type]
            writer.run(b),  # type: ignore[arg-type]
            return_exceptions=True,
        )
    finally:
        await writer.close()
        await engine.dispose()
    failed = [d for d in done if isinstance(d, BaseException)]
    assert len(failed) == 1, done
    assert isinstance(failed[0], DBAPIError)
    assert deadlocked(failed[0])


def test_other_errors_are_not_deadlocks() -> None:
    from sqlalchemy.exc import IntegrityError, OperationalError

    lock_wait = OperationalError("SELECT", {}, Exception(1205, "Lock wait timeout exceeded"))
    duplicate = IntegrityError("INSERT", {}, Exception(1062, "Duplicate entry"))
    assert not deadlocked(lock_wait)
    assert not deadlocked(duplicate)
    assert not deadlocked(RuntimeError("deadlock"))
    victim = OperationalError("SELECT", {}, Exception(1213, "Deadlock found"))
    wrapped = RuntimeError("while recording")
    wrapped.__cause__ = victim
    assert deadlocked(victim)
    assert deadlocked(wrapped)


def _message(uuid: str | None, now: datetime) -> dict[str, object]:
    return {
        "message_uuid": uuid,
        "origin": "api",
        "status": "queued" if uuid else "accepted",
        "to_number": "+14155550101",
        "from_number": "14155550100",
        "created_at": now,
        "updated_at": now,
    }


async def test_locking_messages_by_uuid_passes_a_message_being_inserted(server_url: str) -> None:
    """A send's row, inserted and not yet committed, is no row the projector asked for: it
    must not wait for it. On a young table (the rows asked for are most of it, as in a new
    deployment) MariaDB's optimizer scanned the primary key instead of the UUID index, waited
    for that row's lock (here until its 1 s timeout) and deadlocked with the insert."""
    engine = make_engine(server_url)
    now = datetime.now(UTC)
    uuids = [f"{UUID[:-2]}{n:02d}" for n in range(3)]
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(messages), [_message(u, now) for u in uuids])
        async with engine.connect() as sending, engine.connect() as projecting:
            await sending.begin()
            await sending.execute(insert(messages), _message(None, now))  # held, uncommitted
            await projecting.begin()
            if server_url.startswith("mysql"):
                await projecting.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 1")
            else:
                await projecting.exec_driver_sql("SET LOCAL lock_timeout = '1s'")
            locked = await projecting.run_sync(lock_messages_by_uuid, uuids)
            await projecting.rollback()
            await sending.commit()
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(messages.c.message_uuid, messages.c.id).where(
                    messages.c.message_uuid.in_(uuids)
                )
            )
            expected = {str(u): int(i) for u, i in rows}
    finally:
        await engine.dispose()
    assert {u: row.id for u, row in locked.items()} == expected
    assert sorted(expected) == uuids
