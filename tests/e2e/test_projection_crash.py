"""Crash tests of the projector: SIGKILL `plivo-tracker serve` while it applies a journal
backlog, and SIGKILL the worker that leads the projector under `serve --workers 2` (another
takes over without a restart); either way every journaled report is applied exactly once.

The journal is filled directly (what acknowledged callbacks leave behind: 3,000 messages ×
queued/sent/delivered, in a shuffled order), then a server starts on it and its projector works
through the backlog in passes. The test polls the projector's cursor and kills the process as
soon as the cursor is past the start but short of the head — mid-projection, with a pass in
flight or about to be — restarts it and waits until the cursor reaches the head.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from plivo_tracker.db.engine import make_engine, make_writer
from plivo_tracker.inbound.items import Outcome
from plivo_tracker.inbound.journal import append
from plivo_tracker.loops import owner_pid
from plivo_tracker.messages.models import journal, messages, status_events
from tests.conftest import (
    _migrate,
    callback_fields,
    callback_item,
    new_uuid,
    server_database,
)
from tests.e2e.server import Server, journal_position, wait_projected
from tests.e2e.test_workers_e2e import lease_owner

pytestmark = pytest.mark.slow

MESSAGES = 3000
STATUSES = (("queued", "1"), ("sent", "2"), ("delivered", "3"))


async def _fill(url: str) -> int:
    """Journal every report of the plan (in batches, as group commits would); returns rows."""
    rng = random.Random(20261130)
    fields = [
        callback_fields(uuid, status, Sequence=seq)
        for uuid in (new_uuid() for _ in range(MESSAGES))
        for status, seq in STATUSES
    ]
    rng.shuffle(fields)
    engine = make_engine(url)
    writer = make_writer(engine)
    try:
        now = datetime.now(UTC)
        for start in range(0, len(fields), 500):
            items = [callback_item(f) for f in fields[start : start + 500]]
            outcomes = await writer.run(lambda conn, batch=items: append(conn, batch, now))
            assert set(outcomes) == {Outcome.STORED}
    finally:
        await writer.close()
        await engine.dispose()
    return len(fields)


async def _applied(url: str) -> tuple[Counter[str], Counter[str], int, int]:
    """Events per journaled dedupe key, message statuses, journal rows, messages."""
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            keys = (await conn.execute(select(journal.c.dedupe_key))).scalars().all()
            events = Counter(
                (await conn.execute(select(status_events.c.dedupe_key))).scalars().all()
            )
            statuses = Counter((await conn.execute(select(messages.c.status))).scalars().all())
            count = (await conn.execute(select(func.count()).select_from(messages))).scalar()
    finally:
        await engine.dispose()
    per_key = Counter({k: events.get(k, 0) for k in keys})
    return per_key, statuses, len(keys), int(count or 0)


def _kill_mid_projection(server: Server, url: str) -> tuple[int, int]:
    """SIGKILL as soon as the cursor has moved but not reached the head."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        cursor, head = asyncio.run(journal_position(url))
        if 0 < cursor < head:
            server.proc.send_signal(signal.SIGKILL)
            server.stop(graceful=False)
            return cursor, head
        if cursor >= head > 0:
            pytest.fail("the projector applied the whole backlog before it could be caught")
        time.sleep(0.01)
    pytest.fail("the projector never started")


def _crash_and_check(tmp_path: Path, url: str) -> None:
    rows = asyncio.run(_fill(url))
    first = Server(tmp_path, url, "first")
    cursor, head = _kill_mid_projection(first, url)
    assert first.proc.returncode == -signal.SIGKILL
    print(f"\nkilled with the cursor at {cursor} of {head}", flush=True)  # noqa: T201
    assert asyncio.run(journal_position(url))[0] == cursor  # nothing moved after the kill

    second = Server(tmp_path, url, "second")
    try:
        second.wait_healthy()
        assert wait_projected(url)[1] == rows
    finally:
        second.stop(graceful=True)
    assert "projector.row_set_aside" not in second.log_text()
    _check_applied_once(url, rows)


def _check_applied_once(url: str, rows: int) -> None:
    per_key, statuses, journaled, count = asyncio.run(_applied(url))
    assert journaled == rows
    assert set(per_key.values()) == {1}, "a journaled report applied twice or never"
    assert count == MESSAGES
    assert statuses == Counter({"delivered": MESSAGES})


def _hand_over_and_check(tmp_path: Path, url: str) -> None:
    """Kill the worker that leads the projector in the middle of the backlog: the other
    worker (or the one uvicorn starts in its place) takes the lease over within seconds and
    finishes the journal; serve itself is never restarted."""
    rows = asyncio.run(_fill(url))
    server = Server(tmp_path, url, "workers", WORKERS="2")
    try:
        server.wait_healthy()
        deadline = time.monotonic() + 120
        while True:
            leader = owner_pid(lease_owner(url, "projector"))
            cursor, head = asyncio.run(journal_position(url))
            if leader is not None and 0 < cursor < head:
                break
            if cursor >= head > 0:
                pytest.fail("the projector applied the whole backlog before it could be caught")
            assert time.monotonic() < deadline, "no projector leader at work"
            time.sleep(0.01)
        assert leader != server.proc.pid  # a worker, not serve itself
        os.kill(leader, signal.SIGKILL)
        print(f"\nkilled leader {leader} with the cursor at {cursor} of {head}", flush=True)  # noqa: T201
        assert wait_projected(url, within=120)[1] == rows  # without a restart
        successor = owner_pid(lease_owner(url, "projector"))
        assert successor not in (None, leader)
    finally:
        server.stop(graceful=True)
    assert "projector.row_set_aside" not in server.log_text()
    _check_applied_once(url, rows)


def test_sigkill_of_the_projector_leader_hands_over_sqlite(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hand-over.db'}"
    asyncio.run(_migrate(url))
    _hand_over_and_check(tmp_path, url)


def test_sigkill_during_projection_sqlite(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'projection.db'}"
    asyncio.run(_migrate(url))
    _crash_and_check(tmp_path, url)


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_sigkill_of_the_projector_leader_hands_over_on_a_server(tmp_path: Path, kind: str) -> None:
    with server_database(kind) as url:
        _hand_over_and_check(tmp_path, url)


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_sigkill_during_projection_on_a_server(tmp_path: Path, kind: str) -> None:
    with server_database(kind) as url:
        _crash_and_check(tmp_path, url)
