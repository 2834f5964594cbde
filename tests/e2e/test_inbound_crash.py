"""Crash test for inbound messages: SIGKILL `plivo-tracker serve` right after hundreds of
acknowledged inbound messages; after a restart every one of them is a message, with its text
byte for byte, exactly once (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from plivo_tracker.db.engine import make_engine
from plivo_tracker.messages.models import messages, status_events
from tests.conftest import new_nonce, new_uuid, signed_form
from tests.e2e.server import Server, wait_projected

pytestmark = pytest.mark.slow

MESSAGES = 600
RETRIES = 60  # the same message again under a new nonce (Plivo's retry)
KILL_AFTER = 450
CONCURRENCY = 30


def _text(n: int) -> str:
    return f"#{n} Grüße 👋 STOP? 好的 " + "é" * (n % 7)


@dataclass
class Result:
    acked: dict[str, str] = field(default_factory=dict)  # nonce → uuid
    results: dict[str, str] = field(default_factory=dict)  # nonce → "stored" | "duplicate"
    errors_before_kill: list[str] = field(default_factory=list)
    killed: bool = False


async def _fire_and_kill(base: str, pid: int) -> tuple[Result, dict[str, str]]:
    texts: dict[str, str] = {}
    plan = []
    for n in range(MESSAGES):
        uuid = new_uuid()
        texts[uuid] = _text(n)
        fields = {
            "From": f"44770090{n:04d}",
            "To": "14155550100",
            "Type": "sms",
            "Text": texts[uuid],
            "MessageUUID": uuid,
            "Units": "1",
        }
        plan.append((uuid, fields))
    plan += [plan[i * 7] for i in range(RETRIES)]  # retries, later in the stream
    res = Result()
    queue = iter(plan)

    async def worker(client: httpx.AsyncClient) -> None:
        for uuid, fields in queue:
            if res.killed:
                return
            nonce = new_nonce()
            target, body, headers = signed_form(fields, path="/plivo/inbound", nonce=nonce)
            try:
                resp = await client.post(target, content=body, headers=headers)
            except httpx.HTTPError as exc:
                if not res.killed:
                    res.errors_before_kill.append(repr(exc))
                continue
            if resp.status_code == 200:
                res.acked[nonce] = uuid
                res.results[nonce] = resp.json()["result"]
            elif not res.killed:
                res.errors_before_kill.append(f"{resp.status_code} {resp.text[:100]}")
            if not res.killed and len(res.acked) >= KILL_AFTER:
                os.kill(pid, signal.SIGKILL)  # at once, with requests in flight
                res.killed = True

    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=base, timeout=30.0))
            for _ in range(CONCURRENCY)
        ]
        await asyncio.gather(*(worker(c) for c in clients))
    if not res.killed:
        os.kill(pid, signal.SIGKILL)
    return res, texts


async def _read(url: str) -> tuple[list[tuple[str, str, str]], list[str]]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(messages.c.message_uuid, messages.c.text, messages.c.direction)
            )
            msgs = [(u, t, d) for u, t, d in rows]
            events = (
                await conn.execute(
                    select(status_events.c.message_uuid).where(status_events.c.source == "inbound")
                )
            ).scalars()
            return msgs, list(events)
    finally:
        await engine.dispose()


def _crash_and_check(tmp_path: Path, database_url: str) -> None:
    first = Server(tmp_path, database_url, "first")
    try:
        first.wait_healthy()
        res, texts = asyncio.run(_fire_and_kill(first.base, first.proc.pid))
    finally:
        first.stop(graceful=False)
    assert first.proc.returncode == -signal.SIGKILL
    assert not res.errors_before_kill, res.errors_before_kill[:5]
    assert len(res.acked) >= KILL_AFTER
    assert set(res.results.values()) <= {"stored", "duplicate"}

    second = Server(tmp_path, database_url, "second")
    try:
        second.wait_healthy()
        assert second.wait_ready().status_code == 200
        wait_projected(database_url)
        msgs, events = asyncio.run(_read(database_url))
    finally:
        second.stop(graceful=True)
    by_uuid = {u: (t, d) for u, t, d in msgs}
    assert len(by_uuid) == len(msgs), "a message stored twice"
    acked = set(res.acked.values())
    lost = sorted(acked - set(by_uuid))
    assert not lost, f"{len(lost)} acknowledged inbound messages lost, e.g. {lost[:3]}"
    for uuid in acked:
        assert by_uuid[uuid] == (texts[uuid], "inbound")  # the text byte for byte
    assert sorted(events) == sorted(by_uuid), "one received event per message"


def test_sigkill_loses_no_acknowledged_inbound_message(tmp_path: Path, database: str) -> None:
    _crash_and_check(tmp_path, database)
