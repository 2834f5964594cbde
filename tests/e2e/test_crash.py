"""Crash test: SIGKILL `plivo-tracker serve` under load; every acknowledged callback must survive.

The server answers 200 to a callback only after the transaction holding it has committed. So a
callback whose 200 reached the client must be in the database after the process is killed at an
arbitrary moment, with no graceful shutdown. Each variant starts the real server as a subprocess,
fires ~3000 genuinely signed callbacks (queued/sent/delivered, shuffled locally so some arrive out
of order, plus retries of the same callback under a new nonce) with 50 concurrent requests, kills
it with SIGKILL right after the 2500th 200 while other requests are still in flight, restarts it
on the same database and checks the acknowledged set against the tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from plivo_tracker.db.engine import make_engine
from plivo_tracker.messages.models import callback_nonces, status_events
from tests.conftest import (
    BASE_URL,
    TOKEN,
    callback_fields,
    new_nonce,
    new_uuid,
    server_database,
    signed_form,
)
from tests.e2e.server import Server, journal_position, wait_projected

pytestmark = pytest.mark.slow

MESSAGES = 900  # x 3 statuses = 2700 callbacks ...
RETRIES = 300  # ... + 300 retries of one of them under a new nonce = 3000 requests
KILL_AFTER = 2500  # SIGKILL right after this many 200s, with requests still in flight
CONCURRENCY = 50
STATUSES = ("queued", "sent", "delivered")


@dataclass(frozen=True, slots=True)
class Planned:
    nonce: str
    uuid: str
    status: str
    retry: bool
    target: str
    body: bytes
    headers: dict[str, str]


def _plan(rng: random.Random) -> list[Planned]:
    """Signed requests: each message's statuses close together but locally shuffled, plus retries.

    A retry carries exactly the same fields as the original (so the same dedupe key) under a
    new nonce and signature, as Plivo does when it did not get our 200 in time.
    """
    originals: list[tuple[str, str, dict[str, str]]] = []
    for n in range(MESSAGES):
        uuid = new_uuid()
        for s, status in enumerate(STATUSES):
            extra = {"MessageTime": f"2026-11-23 12:{n % 60:02d}:{s:02d}"}
            originals.append((uuid, status, callback_fields(uuid, status, **extra)))
    # Shuffle inside windows: statuses of a message mostly arrive in order, often not.
    window = 60
    for start in range(0, len(originals), window):
        chunk = originals[start : start + window]
        rng.shuffle(chunk)
        originals[start : start + window] = chunk

    def sign(uuid: str, status: str, fields: dict[str, str], retry: bool) -> Planned:
        nonce = new_nonce()
        target, body, headers = signed_form(fields, token=TOKEN, nonce=nonce, base_url=BASE_URL)
        return Planned(nonce, uuid, status, retry, target, body, headers)

    plan = [sign(u, s, f, False) for u, s, f in originals]
    # Retries land a little after their original (sometimes concurrently with it).
    for index in sorted(rng.sample(range(len(originals)), RETRIES), reverse=True):
        uuid, status, fields = originals[index]
        at = min(len(plan), index + rng.randint(1, 150))
        plan.insert(at, sign(uuid, status, fields, True))
    assert len({p.nonce for p in plan}) == len(plan)
    return plan


@dataclass
class LoadResult:
    acked: dict[str, str] = field(default_factory=dict)  # nonce -> result ("stored", ...)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    started: int = 0
    completed: int = 0
    killed_at: float | None = None
    acked_at_kill: int = 0
    in_flight_at_kill: int = 0
    non_200_before_kill: list[tuple[int, str]] = field(default_factory=list)


async def _fire_and_kill(base: str, plan: list[Planned], pid: int) -> LoadResult:
    res = LoadResult()
    queue = iter(plan)

    def kill_now() -> None:
        os.kill(pid, signal.SIGKILL)
        res.killed_at = time.monotonic()
        res.acked_at_kill = len(res.acked)
        res.in_flight_at_kill = res.started - res.completed

    async def worker(client: httpx.AsyncClient) -> None:
        for p in queue:
            if res.killed_at is not None:
                return
            res.started += 1
            try:
                resp = await client.post(p.target, content=p.body, headers=p.headers)
            except httpx.HTTPError as exc:
                res.completed += 1
                res.errors[type(exc).__name__] += 1
                if res.killed_at is None:
                    res.non_200_before_kill.append((0, repr(exc)))
                continue
            res.completed += 1
            res.statuses[resp.status_code] += 1
            if resp.status_code == 200:
                res.acked[p.nonce] = resp.json()["result"]
            elif res.killed_at is None:
                res.non_200_before_kill.append((resp.status_code, resp.text[:200]))
            if res.killed_at is None and (
                len(res.acked) >= KILL_AFTER or res.completed == len(plan)
            ):
                kill_now()  # synchronously, before any other response is looked at

    # One client (one keep-alive connection) per worker: a single httpx pool shared by 50 tasks
    # tops out around 150 requests/s here, far below what the server takes.
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=base, timeout=30.0))
            for _ in range(CONCURRENCY)
        ]
        await asyncio.gather(*(worker(client) for client in clients))
    if res.killed_at is None:  # every request failed before the threshold: kill anyway
        kill_now()
    return res


async def _read_db(url: str) -> tuple[set[str], list[tuple[str | None, str | None, str]]]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            nonces = set((await conn.execute(select(callback_nonces.c.nonce))).scalars().all())
            rows = await conn.execute(
                select(status_events.c.nonce, status_events.c.message_uuid, status_events.c.status)
            )
            events = [(n, u, s) for n, u, s in rows]
    finally:
        await engine.dispose()
    return nonces, events


def _say(message: str) -> None:
    """Informational output (shown with -s): numbers we report but do not assert on."""
    print(message, flush=True)  # noqa: T201


def _problems(log: str) -> list[str]:
    return [
        line
        for line in log.splitlines()
        if "Traceback" in line or '"level": "error"' in line or '"level":"error"' in line
    ]


def _crash_and_check(tmp_path: Path, database_url: str) -> None:
    rng = random.Random(20261123)
    t0 = time.monotonic()
    plan = _plan(rng)
    by_nonce = {p.nonce: p for p in plan}

    first = Server(tmp_path, database_url, "first")
    try:
        first.wait_healthy()
        t_load = time.monotonic()
        res = asyncio.run(_fire_and_kill(first.base, plan, first.proc.pid))
        t_load = time.monotonic() - t_load
    finally:
        first.stop(graceful=False)
    assert first.proc.returncode == -signal.SIGKILL, "the server must die by SIGKILL"

    _say(
        f"\n[{database_url.split(':')[0]}] planned={len(plan)} sent={res.started} "
        f"acknowledged(200) at kill={res.acked_at_kill} in flight at kill="
        f"{res.in_flight_at_kill} acknowledged total={len(res.acked)} "
        f"statuses={dict(res.statuses)} client errors={dict(res.errors)} "
        f"results={dict(Counter(res.acked.values()))} load {t_load:.1f}s"
    )
    first_problems = _problems(first.log_text())
    if first_problems:
        _say("server log problems before the kill:\n" + "\n".join(first_problems[:20]))
    assert not res.non_200_before_kill, f"non-200 before the kill: {res.non_200_before_kill[:5]}"
    assert len(res.acked) >= KILL_AFTER

    second = Server(tmp_path, database_url, "second")
    try:
        second.wait_healthy()
        ready = second.wait_ready()
        assert ready.status_code == 200, ready.text
        assert ready.json()["spool_files"] == 0, ready.text
        cursor, head = asyncio.run(journal_position(database_url))
        _say(f"journal after restart: applied up to {cursor} of {head}")
        wait_projected(database_url)  # the backlog the kill left, applied by the new process
        nonces, events = asyncio.run(_read_db(database_url))
    finally:
        second.stop(graceful=True)
    second_problems = _problems(second.log_text())
    if second_problems:
        _say("server log problems after restart:\n" + "\n".join(second_problems[:20]))

    # Every acknowledged nonce is committed.
    lost_nonces = sorted(n for n in res.acked if n not in nonces)
    assert not lost_nonces, f"{len(lost_nonces)} acknowledged nonces lost, e.g. {lost_nonces[:5]}"

    # Every acknowledged callback has its event: under its own nonce when it was "stored", and
    # under some nonce when it was answered "duplicate" (the other copy won the race).
    event_nonces = {n for n, _, _ in events}
    event_keys = Counter((u, s) for _, u, s in events)
    missing_stored = [n for n, r in res.acked.items() if r == "stored" and n not in event_nonces]
    assert not missing_stored, f"{len(missing_stored)} 'stored' callbacks without their event"
    missing_events = sorted(
        {(by_nonce[n].uuid, by_nonce[n].status) for n in res.acked} - set(event_keys)
    )
    assert not missing_events, f"{len(missing_events)} acknowledged callbacks without an event"
    assert max(event_keys.values()) == 1, "a callback was stored twice"
    unexpected = {r for r in res.acked.values()} - {"stored", "duplicate"}
    assert not unexpected, f"unexpected results {unexpected}"

    unacked_stored = len(nonces & (set(by_nonce) - set(res.acked)))
    _say(
        f"after restart: nonces in db={len(nonces)} events={len(events)} (of which not "
        f"acknowledged but committed: {unacked_stored}); total {time.monotonic() - t0:.1f}s"
    )


def test_sigkill_loses_no_acknowledged_callback_sqlite(tmp_path: Path) -> None:
    _crash_and_check(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'crash.db'}")


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_sigkill_loses_no_acknowledged_callback_on_a_server(tmp_path: Path, kind: str) -> None:
    with server_database(kind) as url:
        _crash_and_check(tmp_path, url)
