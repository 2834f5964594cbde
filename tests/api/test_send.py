"""Sending end to end on SQLite and PostgreSQL: API → outbox → dispatcher → simulator → signed
callbacks → ingestion → final status. Plus validation, idempotency, retries and failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, IntegrityError, InternalError, MissingGreenlet
from sqlalchemy.ext.asyncio import AsyncEngine

from plivo_tracker.composition import LOOKUP_CONNECTIONS, build_sending
from plivo_tracker.config import Settings
from plivo_tracker.db.engine import DatabaseUnavailable, make_engine, make_reader, make_writer
from plivo_tracker.messages.models import dispatch_state, messages, outbox, send_attempts
from plivo_tracker.outbound import dispatcher as dispatcher_module
from plivo_tracker.outbound.dispatcher import Dispatcher
from plivo_tracker.outbound.outbox import SendRequest, submit, validate
from plivo_tracker.outbound.repository import claim_due
from plivo_tracker.outbound.retry import RetryPolicy
from plivo_tracker.plivo.client import AiohttpTransport, PlivoClient, Timeout
from plivo_tracker.simulator.api import Faults, SimulatedPlivo, create_simulator_app
from plivo_tracker.simulator.scenario import ScenarioConfig
from tests.conftest import (
    AUTH_ID,
    BASE_URL,
    TOKEN,
    PlivoOpener,
    ServeASGI,
    ServiceOpener,
    get_message,
)

FINAL = {"delivered", "undelivered", "failed"}


@pytest.fixture
async def sim_client(
    simulator_service: ServiceOpener,
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """The app in simulator mode (no credentials), callbacks delivered to itself in-process."""
    scenario = ScenarioConfig(speed=200, fail_rate=0.1, undelivered_rate=0.1, dup_rate=0.2)
    async with simulator_service(scenario) as opened:
        yield opened


async def _wait_final(client: httpx.AsyncClient, ids: list[int]) -> list[Any]:
    found: list[Any] = []
    try:
        async with asyncio.timeout(20):
            while True:
                found = [(await client.get(f"/api/messages/{i}")).json() for i in ids]
                if all(m["status"] in FINAL for m in found):
                    return found
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"not final after 20 s: {[m['status'] for m in found]}")


async def test_send_flows_to_a_final_status(sim_client: tuple[httpx.AsyncClient, Any]) -> None:
    client, app = sim_client
    resp = await client.post(
        "/api/messages",
        json={"to": [f"+1415555{i:04d}" for i in range(12)], "text": "Your code is 482193"},
    )
    assert resp.status_code == 202, resp.text
    created = resp.json()["messages"]
    assert [m["status"] for m in created] == ["accepted"] * 12
    assert resp.json()["text"] == {"encoding": "GSM-7", "segments": 1}
    final = await _wait_final(client, [m["id"] for m in created])
    sim: SimulatedPlivo = app.state.sending.simulator
    assert sim.accepted == 12  # each message sent exactly once
    for msg in final:
        mdr = sim.messages[msg["message_uuid"]]
        assert msg["status"] == mdr["message_state"]
        assert msg["origin"] == "api"
        assert msg["events"]  # the signed callbacks landed on our message


async def test_invalid_numbers_are_named(sim_client: tuple[httpx.AsyncClient, Any]) -> None:
    client, _ = sim_client
    resp = await client.post(
        "/api/messages", json={"to": ["+14155550101", "12", "+999123"], "text": "hi"}
    )
    assert resp.status_code == 422
    problems = resp.json()["error"]["problems"]
    assert [(p["index"], p["value"]) for p in problems] == [(1, "12"), (2, "+999123")]
    resp = await client.post("/api/messages", json={"to": "+14155550101"})
    assert resp.status_code == 422
    assert resp.json()["error"]["problems"][0]["field"] == "text"
    resp = await client.post(
        "/api/messages",
        json={"to": "+447700900123", "type": "mms", "media_urls": ["https://x.example/a.png"]},
    )
    assert resp.status_code == 422  # MMS: US and Canada only


async def test_idempotency_key_replay_and_conflict(
    sim_client: tuple[httpx.AsyncClient, Any],
) -> None:
    client, app = sim_client
    body = {"to": "+14155550101", "text": "once"}
    headers = {"Idempotency-Key": "order-1234"}
    first = await client.post("/api/messages", json=body, headers=headers)
    again = await client.post("/api/messages", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    other = await client.post("/api/messages", json={**body, "text": "twice"}, headers=headers)
    assert other.status_code == 409
    await _wait_final(client, [first.json()["messages"][0]["id"]])
    assert app.state.sending.simulator.accepted == 1


async def test_texts_and_keys_round_trip_exactly(sim_client: tuple[httpx.AsyncClient, Any]) -> None:
    """Every database keeps 4-byte characters (emoji, on MariaDB only in utf8mb4) and CJK text
    as sent, and tells apart keys that differ in case only (a byte-exact collation, where
    MariaDB's usual one would take "Order-1" for "order-1")."""
    client, app = sim_client
    text = "验证码 482193 😀🇯🇵 — こんにちは 𠜎"
    ids = []
    for key in ("order-1", "Order-1"):
        resp = await client.post(
            "/api/messages",
            json={"to": "+14155550101", "text": text},
            headers={"Idempotency-Key": key},
        )
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["messages"][0]["id"])
    assert ids[0] != ids[1]  # two keys, two messages
    await _wait_final(client, ids)
    for id_ in ids:
        shown = (await client.get(f"/api/messages/{id_}")).json()
        assert shown["text"].encode() == text.encode()
    assert app.state.sending.simulator.accepted == 2


async def _dispatch_against(
    engine: AsyncEngine, plivo: PlivoOpener, sim: SimulatedPlivo, token: str, passes: int
) -> list[dict[str, Any]]:
    """Submit one message and run the dispatcher `passes` times against `sim` (over HTTP)."""
    writer = make_writer(engine)
    client = await plivo(sim, token)
    policy = RetryPolicy(base=0.001, cap=0.001, max_attempts=5)
    dispatcher = Dispatcher(
        writer,
        client,
        callback_url=BASE_URL + "/plivo/callback",
        mps=None,
        shared_bucket=False,
        policy=policy,
        reconcile_grace=0.0,
    )
    valid = validate(SendRequest(to="+14155550101", text="hi"), "14155550100")
    try:
        await writer.run(lambda conn: submit(conn, valid, datetime.now(UTC), None))
        for _ in range(passes):
            await dispatcher.run_once()
            await asyncio.sleep(0.01)
    finally:
        await client.aclose()
        await writer.close()
    async with engine.connect() as conn:
        rows = await conn.execute(select(send_attempts.c.outcome, send_attempts.c.http_status))
        return [dict(r._mapping) for r in rows]


async def test_server_errors_are_reconciled_before_each_resend(
    engine: AsyncEngine, plivo_over_http: PlivoOpener
) -> None:
    """A 500 may mean the message exists: each one is looked up (List Messages) and only a
    lookup that positively finds nothing allows the next attempt."""
    sim = SimulatedPlivo(AUTH_ID, TOKEN, Faults(fail_first=3, fail_status=500))
    attempts = await _dispatch_against(engine, plivo_over_http, sim, TOKEN, passes=8)
    assert [a["outcome"] for a in attempts] == [
        *["ambiguous", "not_found"] * 3,
        "accepted",
    ]
    assert sim.accepted == 1
    async with engine.connect() as conn:
        state = (await conn.execute(select(outbox.c.state))).scalar_one()
    assert state == "done"


async def test_unauthorized_pauses_dispatching_and_fails_nothing(
    engine: AsyncEngine, plivo_over_http: PlivoOpener
) -> None:
    sim = SimulatedPlivo(AUTH_ID, TOKEN)
    attempts = await _dispatch_against(engine, plivo_over_http, sim, "wrong-token", passes=4)
    # One attempt, not counted; later passes are paused (the probe waits 5 s first).
    assert attempts == [{"outcome": "paused", "http_status": 401}]
    async with engine.connect() as conn:
        state = (await conn.execute(select(outbox.c.state))).scalar_one()
        status = (await conn.execute(select(messages.c.status))).scalar_one()
        paused = (await conn.execute(select(dispatch_state.c.paused_by))).scalar_one()
    assert (state, status, paused) == ("pending", "accepted", "auto")
    assert sim.accepted == 0


async def test_several_dispatchers_send_each_message_once(
    engine: AsyncEngine, db_url: str, serve_asgi: ServeASGI
) -> None:
    """Workers racing on one outbox (separate engines and connection pools, as separate
    processes would have): every message reaches the simulator exactly once."""
    sim = SimulatedPlivo(AUTH_ID, TOKEN)
    base = await serve_asgi(create_simulator_app(sim))
    engines = [make_engine(db_url) for _ in range(4)]
    writers = [make_writer(e) for e in engines]
    clients = [PlivoClient(base, AUTH_ID, TOKEN) for _ in engines]
    dispatchers = [
        Dispatcher(w, c, callback_url=BASE_URL + "/plivo/callback", mps=None, shared_bucket=False)
        for w, c in zip(writers, clients, strict=True)
    ]
    valid = validate(
        SendRequest(to=[f"+1415555{i:04d}" for i in range(60)], text="hi"), "14155550100"
    )
    try:
        await writers[0].run(lambda conn: submit(conn, valid, datetime.now(UTC), None))

        async def drain(d: Dispatcher) -> None:
            for _ in range(50):
                await d.run_once()
                await asyncio.sleep(0)

        await asyncio.gather(*(drain(d) for d in dispatchers))
    finally:
        for c in clients:
            await c.aclose()
        for w in writers:
            await w.close()
        for e in engines:
            await e.dispose()
    assert sim.accepted == 60
    assert len({m["to_number"] for m in sim.messages.values()}) == 60
    async with engine.connect() as conn:
        outcomes = (await conn.execute(select(send_attempts.c.outcome))).scalars().all()
        states = (await conn.execute(select(outbox.c.state))).scalars().all()
    assert outcomes == ["accepted"] * 60
    assert set(states) == {"done"}


async def test_ambiguous_send_is_reconciled_not_resent(
    engine: AsyncEngine, live_simulator: tuple[str, SimulatedPlivo]
) -> None:
    """The send times out after reaching Plivo: the dispatcher looks the message up and adopts
    it instead of sending it again."""
    base, sim = live_simulator
    sim.faults.latency = 0.6
    writer = make_writer(engine)
    client = PlivoClient(base, AUTH_ID, TOKEN, timeout=Timeout(0.2, connect=1.0))
    dispatcher = Dispatcher(
        writer,
        client,
        callback_url=BASE_URL + "/plivo/callback",
        mps=None,
        shared_bucket=False,
        reconcile_grace=0.0,
    )
    valid = validate(SendRequest(to="+14155550101", text="hi"), "14155550100")
    try:
        await writer.run(lambda conn: submit(conn, valid, datetime.now(UTC), None))
        await dispatcher.run_once()  # times out: ambiguous
        await asyncio.sleep(0.8)  # the simulator finishes creating it
        sim.faults.latency = 0.0
        await dispatcher.run_once()  # reconciles
        await dispatcher.run_once()  # nothing left to send
    finally:
        await client.aclose()
        await writer.close()
    assert sim.accepted == 1
    async with engine.connect() as conn:
        outcomes = (await conn.execute(select(send_attempts.c.outcome))).scalars().all()
        state = (await conn.execute(select(outbox.c.state))).scalar_one()
    assert outcomes == ["ambiguous", "reconciled"]
    assert state == "done"
    msg = await get_message(engine, "1")
    assert msg is not None
    assert msg.message_uuid == next(iter(sim.messages))


async def test_a_dead_workers_leases_are_reconciled_then_sent(
    engine: AsyncEngine, plivo_over_http: PlivoOpener
) -> None:
    """A worker claimed a message and died: after its lease the message is looked up at Plivo
    first (it may have been sent) and only then sent."""
    sim = SimulatedPlivo(AUTH_ID, TOKEN)
    writer = make_writer(engine)
    client = await plivo_over_http(sim)
    dispatcher = Dispatcher(
        writer, client, callback_url=BASE_URL + "/plivo/callback", mps=None, shared_bucket=False
    )
    valid = validate(SendRequest(to="+14155550101", text="hi"), "14155550100")
    past = datetime.now(UTC) - timedelta(minutes=10)
    try:
        await writer.run(lambda conn: submit(conn, valid, past, None))
        # The dead worker's claim, with a lease that has long run out.
        await writer.run(lambda conn: claim_due(conn, past, "dead", timedelta(seconds=1), 10))
        for _ in range(3):
            await dispatcher.run_once()
    finally:
        await client.aclose()
        await writer.close()
    assert sim.accepted == 1
    async with engine.connect() as conn:
        outcomes = (await conn.execute(select(send_attempts.c.outcome))).scalars().all()
    assert outcomes == ["not_found", "accepted"]


class _LosesTheDatabase:
    """A writer whose transaction recording a dispatcher pass meets a lost database `times`
    times: before it commits, or (`after_commit`) once it has committed, as when the answer to
    COMMIT is lost with the connection."""

    def __init__(self, inner: Any, times: int, *, after_commit: bool = False) -> None:
        self.inner, self.left, self.after_commit = inner, times, after_commit

    async def run(self, fn: Any, **kwargs: Any) -> Any:
        if getattr(fn, "__name__", "") == "record" and self.left:
            self.left -= 1
            if self.after_commit:
                await self.inner.run(fn, **kwargs)
            reset = ConnectionResetError(104, "Connection reset by peer")
            raise DBAPIError("COMMIT", None, reset, connection_invalidated=True)
        return await self.inner.run(fn, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def _one_pass_losing_the_database(
    engine: AsyncEngine, plivo: PlivoOpener, writer: _LosesTheDatabase, sim: SimulatedPlivo
) -> None:
    client = await plivo(sim)
    dispatcher = Dispatcher(
        writer, client, callback_url=BASE_URL + "/plivo/callback", mps=None, shared_bucket=False
    )
    valid = validate(SendRequest(to="+14155550101", text="hi"), "14155550100")
    try:
        await writer.run(lambda conn: submit(conn, valid, datetime.now(UTC), None))
        await dispatcher.run_once()
    finally:
        await client.aclose()


@pytest.mark.parametrize("after_commit", [False, True], ids=["before-commit", "answer-lost"])
async def test_a_pass_keeps_its_outcomes_while_the_database_is_lost(
    engine: AsyncEngine,
    plivo_over_http: PlivoOpener,
    monkeypatch: pytest.MonkeyPatch,
    after_commit: bool,
) -> None:
    """The database restarts between the send and the pass's record: the dispatcher writes what
    Plivo answered once the database is back (not two minutes later, after a lookup), and
    writing it again after a commit whose answer was lost records nothing twice."""
    monkeypatch.setattr(dispatcher_module, "RECORD_RETRY", 0.01)
    sim = SimulatedPlivo(AUTH_ID, TOKEN)
    inner = make_writer(engine)
    try:
        writer = _LosesTheDatabase(inner, times=2, after_commit=after_commit)
        await _one_pass_losing_the_database(engine, plivo_over_http, writer, sim)
        assert writer.left == 0
    finally:
        await inner.close()
    assert sim.accepted == 1
    async with engine.connect() as conn:
        outcomes = (await conn.execute(select(send_attempts.c.outcome))).scalars().all()
        row = (await conn.execute(select(outbox.c.state, outbox.c.lease_owner))).one()
    assert outcomes == ["accepted"]
    assert tuple(row) == ("done", None)


async def test_a_pass_that_cannot_record_leaves_its_messages_to_the_lookup(
    engine: AsyncEngine, plivo_over_http: PlivoOpener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past RECORD_PATIENCE the pass fails: its messages stay leased, to be looked up once the
    lease has run out (never sent again blindly)."""
    monkeypatch.setattr(dispatcher_module, "RECORD_RETRY", 0.01)
    monkeypatch.setattr(dispatcher_module, "RECORD_PATIENCE", 0.05)
    sim = SimulatedPlivo(AUTH_ID, TOKEN)
    inner = make_writer(engine)
    try:
        writer = _LosesTheDatabase(inner, times=1_000_000)
        with pytest.raises(DBAPIError):
            await _one_pass_losing_the_database(engine, plivo_over_http, writer, sim)
    finally:
        await inner.close()
    assert sim.accepted == 1
    async with engine.connect() as conn:
        state = (await conn.execute(select(outbox.c.state))).scalar_one()
    assert state == "sending"


async def test_resend_policy_builds_a_chain_up_to_its_limit(
    simulator_service: ServiceOpener,
) -> None:
    """RESEND_ERROR_CODES / RESEND_MAX_ATTEMPTS: an undelivered message with a listed code is
    sent again (a new message pointing at the failed one), and again, until the chain holds
    three messages; each message of the chain lists the whole chain."""
    scenario = ScenarioConfig(speed=300, fail_rate=0, undelivered_rate=1.0, dup_rate=0.2)
    async with simulator_service(
        scenario,
        resend_error_codes="20,30,70,80,100,200",  # every code the simulator uses for undelivered
        resend_max_attempts=3,
        resend_backoff_seconds=0,
    ) as (client, app):
        resp = await client.post(
            "/api/messages", json={"to": ["+14155550101", "+14155550102"], "text": "hi"}
        )
        originals = [m["id"] for m in resp.json()["messages"]]
        chains: list[list[int]] = []
        for _ in range(400):  # the resends appear as the previous attempts fail
            found = [(await client.get(f"/api/messages/{i}")).json() for i in originals]
            chains = [[c["id"] for c in m["chain"]] for m in found]
            if all(len(c) == 3 for c in chains):
                last = [(await client.get(f"/api/messages/{c[-1]}")).json() for c in chains]
                if all(m["status"] in FINAL for m in last):
                    break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # time for a (wrong) fourth attempt to show up
        engine = app.state.ctx.engine
        async with engine.connect() as conn:
            total = (await conn.execute(select(func.count()).select_from(messages))).scalar_one()
        tail = (await client.get(f"/api/messages/{chains[0][-1]}")).json()
        sim: SimulatedPlivo = app.state.sending.simulator
    assert [c[0] for c in chains] == originals
    assert all(len(c) == 3 for c in chains)
    assert tail["attempt_of"] == chains[0][1]
    assert [c["status"] for c in tail["chain"]] == ["undelivered"] * 3
    assert total == 6  # the third failure is not resent
    assert sim.accepted == 6


async def test_default_policy_does_not_resend_permanent_codes(
    simulator_service: ServiceOpener,
) -> None:
    scenario = ScenarioConfig(speed=300, fail_rate=1.0, undelivered_rate=0, dup_rate=0)
    async with simulator_service(scenario, resend_backoff_seconds=0) as (client, app):
        resp = await client.post("/api/messages", json={"to": "+14155550101", "text": "hi"})
        [original] = [m["id"] for m in resp.json()["messages"]]
        [failed] = await _wait_final(client, [original])
        await asyncio.sleep(0.3)
        sim: SimulatedPlivo = app.state.sending.simulator
    # The simulator's `failed` codes (40, 50, 420, 450, 900) are all off by default.
    assert failed["status"] == "failed"
    assert [c["id"] for c in failed["chain"]] == [original]
    assert sim.accepted == 1


async def _wait_for_another_process(
    settings: Settings, url: str, poll_interval: float | None
) -> tuple[int, float]:
    """A dispatcher in another process (here: its own engine, and LISTEN connection on
    PostgreSQL) and a message submitted elsewhere: (messages it sent, seconds it took)."""
    from plivo_tracker.composition import open_worker

    api_engine = make_engine(url)
    api_writer = make_writer(api_engine)
    try:
        async with open_worker(settings, poll_interval=poll_interval) as worker:
            task = asyncio.create_task(worker.run())
            try:
                await asyncio.sleep(0.3)  # the worker is idle now, waiting up to 30 s
                valid = validate(SendRequest(to="+14155550101", text="hi"), "14155550100")
                started = asyncio.get_running_loop().time()
                await api_writer.run(lambda conn: submit(conn, valid, datetime.now(UTC), None))
                sim = worker.simulator
                assert sim is not None
                for _ in range(500):  # up to 10 s
                    if sim.accepted:
                        break
                    await asyncio.sleep(0.02)
                waited = asyncio.get_running_loop().time() - started
            finally:
                worker.stop()
                await task
    finally:
        await api_writer.close()
        await api_engine.dispose()
    return sim.accepted, waited


async def test_postgresql_workers_wake_on_notify(
    make_settings: Callable[..., Settings], pg_url: str
) -> None:
    """Another process's dispatcher starts a message at once, not at its next poll."""
    settings = make_settings(database_url=pg_url, plivo_auth_id=None, plivo_auth_token=None)
    accepted, waited = await _wait_for_another_process(settings, pg_url, 30.0)
    assert accepted == 1
    assert waited < 5.0  # woken by NOTIFY, far sooner than the 30 s poll


async def test_mariadb_workers_find_new_sends_by_polling(
    make_settings: Callable[..., Settings], mariadb_url: str
) -> None:
    """MariaDB cannot notify: another process's dispatcher finds the message at its next
    look, every 0.25 s by default (`Settings.poll_seconds`)."""
    settings = make_settings(database_url=mariadb_url, plivo_auth_id=None, plivo_auth_token=None)
    assert settings.poll_seconds == 0.25
    accepted, waited = await _wait_for_another_process(settings, mariadb_url, None)
    assert accepted == 1
    assert waited < 5.0


async def test_plivo_concurrency_sizes_the_dispatcher_and_its_pool(
    make_settings: Callable[..., Settings], engine: AsyncEngine
) -> None:
    """PLIVO_CONCURRENCY: sends in flight, and as many kept-alive connections plus room for
    the lookups; the timeout is PLIVO_TIMEOUT_SECONDS."""
    settings = make_settings(plivo_concurrency=3, plivo_timeout_seconds=2.5)
    writer = make_writer(engine)
    reader = make_reader(engine)
    sending = build_sending(settings, writer, reader, engine.dialect)
    try:
        assert sending.dispatcher.concurrency == 3
        transport = sending.client.transport
        assert isinstance(transport, AiohttpTransport)
        assert transport.pool == 3 + LOOKUP_CONNECTIONS
        assert transport.timeout == Timeout(2.5, connect=2.5)
    finally:
        await sending.close()
        await reader.close()
        await writer.close()


def _broken_under_a_statement() -> Exception:
    """What a send met as PostgreSQL shut down: the driver's connection broke under the
    statement, and SQLAlchemy's attempt to reconnect while handling that failed too."""
    try:
        raise InternalError("INSERT", None, Exception("cannot switch to state 12"))
    except InternalError:
        try:
            raise MissingGreenlet("greenlet_spawn has not been called")
        except MissingGreenlet as exc:
            return exc
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    "lost",
    [
        DatabaseUnavailable("connection refused"),
        DBAPIError("COMMIT", None, ConnectionResetError(104, "reset"), connection_invalidated=True),
        _broken_under_a_statement(),
        ConnectionRefusedError(111, "Connection refused"),
    ],
    ids=["unreachable", "connection-lost", "broken-connection", "refused"],
)
async def test_a_send_while_the_database_is_down_is_503_and_its_retry_is_taken(
    app: Any, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, lost: Exception
) -> None:
    """A database restarting under a send is a 503 with Retry-After (retry with the same
    Idempotency-Key), not a 500; once it is back, the retry is taken, once."""
    writer = app.state.ctx.writer

    async def down(*_args: Any, **_kwargs: Any) -> Any:
        raise lost

    body = {"to": "+14155550101", "text": "during a restart", "from": "+14155550100"}
    headers = {"Idempotency-Key": "restart-1"}
    with monkeypatch.context() as patched:
        patched.setattr(writer, "run", down)
        refused = await client.post("/api/messages", json=body, headers=headers)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "database_unavailable"
    assert refused.headers["Retry-After"] == "1"
    taken = await client.post("/api/messages", json=body, headers=headers)
    again = await client.post("/api/messages", json=body, headers=headers)
    assert taken.status_code == again.status_code == 202
    assert taken.json() == again.json()


async def test_other_database_errors_stay_500(
    app: Any, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a lost connection is "unavailable": a statement the database refuses is a bug."""

    async def refused(*_args: Any, **_kwargs: Any) -> Any:
        raise IntegrityError("INSERT", None, ValueError("duplicate key"))

    monkeypatch.setattr(app.state.ctx.writer, "run", refused)
    resp = await client.post(
        "/api/messages", json={"to": "+14155550101", "text": "x", "from": "+14155550100"}
    )
    assert resp.status_code == 500
    assert resp.json()["error"]["code"] == "internal_error"
