"""Retention through the app, on real SQLite and PostgreSQL: a purge running beside a load of
signed callbacks loses nothing newer than its cut-off, the live stream resumes past purged ids,
`serve` purges by itself, and STORE_MESSAGE_TEXT=false sends and tracks messages it keeps no
text of."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
import websockets
from sqlalchemy import Connection, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from plivo_tracker.db.engine import make_writer
from plivo_tracker.inbound.routes import CallbackEndpoint
from plivo_tracker.messages.models import (
    callback_nonces,
    idempotency_keys,
    leases,
    messages,
    status_events,
)
from plivo_tracker.outbound.outbox import SendRequest, request_hash
from plivo_tracker.retention.purger import Purger
from plivo_tracker.simulator.api import SimulatedPlivo
from plivo_tracker.simulator.scenario import ScenarioConfig
from tests.api.test_live import _changes_in_db, _frames, _http, _journey, _serving
from tests.conftest import (
    AUTH,
    ServiceOpener,
    callback_fields,
    new_nonce,
    new_uuid,
    signed_form,
)
from tests.old_data import add_message, utcnow

RETENTION = timedelta(days=90)
OLD = timedelta(days=120)


def purger(writer: Any, batch_size: int) -> Purger:
    return Purger(
        writer, retention=RETENTION, stats_retention=timedelta(days=400), batch_size=batch_size
    )


async def seed_old(engine: AsyncEngine, n: int) -> list[tuple[int, str]]:
    """n old, delivered messages of ours, three events each: (id, MessageUUID)."""
    now = utcnow()

    def fill(conn: Connection) -> list[tuple[int, str]]:
        made = [add_message(conn, now, OLD + timedelta(minutes=i), "delivered") for i in range(n)]
        rows = conn.execute(
            select(messages.c.id, messages.c.message_uuid).where(messages.c.id.in_(made))
        )
        return sorted((int(i), str(u)) for i, u in rows)

    async with engine.begin() as conn:
        return await conn.run_sync(fill)


async def scalar(engine: AsyncEngine, stmt: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(stmt)).scalar()


# ---- a purge beside a callback load ------------------------------------------------------------


async def test_purge_beside_a_callback_load_loses_nothing_newer(
    app: CallbackEndpoint, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    old = await seed_old(engine, 240)
    late = old[::12]  # 20 old messages get a late callback while the purge runs
    fresh = [new_uuid() for _ in range(150)]
    requests: list[tuple[str, dict[str, str]]] = []
    for uuid in fresh:
        requests.append((new_nonce(), callback_fields(uuid, "queued", Sequence="1")))
        requests.append((new_nonce(), callback_fields(uuid, "delivered", Sequence="3")))
    for _, uuid in late:
        requests.append((new_nonce(), callback_fields(uuid, "delivered", Sequence="9")))
    statuses: list[int] = []
    gate = asyncio.Semaphore(32)
    loaded = asyncio.Event()

    async def post(nonce: str, fields: dict[str, str]) -> None:
        target, body, headers = signed_form(fields, nonce=nonce)
        async with gate:
            resp = await client.post(target, content=body, headers=headers)
        statuses.append(resp.status_code)

    async def load() -> None:
        await asyncio.gather(*(post(n, f) for n, f in requests))
        loaded.set()

    passes: list[int] = []

    async def purge_repeatedly() -> None:
        # The app's own writer, as `serve` does; batches of 7 rows, pass after pass.
        p = purger(app.app.state.ctx.writer, batch_size=7)  # type: ignore[attr-defined]
        while True:
            done = loaded.is_set()
            result = await p.run_once()
            assert result is not None
            passes.append(result.counts()["messages"])
            if done:
                return

    await asyncio.gather(load(), purge_repeatedly())

    assert statuses == [200] * len(requests)  # every callback acknowledged
    assert len(passes) >= 2
    assert sum(passes) >= len(old) - len(late)
    nonces = {n for n, _ in requests}
    stored = await scalar(
        engine, select(func.count()).where(callback_nonces.c.nonce.in_(sorted(nonces)))
    )
    assert stored == len(requests)
    # Nothing newer than the cut-off lost: every callback's event is there, on its message.
    for uuid in fresh:
        got = await client.get(f"/api/messages/{uuid}")
        assert got.json()["status"] == "delivered"
        assert [e["status"] for e in got.json()["events"]] == ["queued", "delivered"]
    for _, uuid in late:
        # Either on the old message (its late change kept it) or on a placeholder made after
        # it went: the callback is stored, never lost.
        got = await client.get(f"/api/messages/{uuid}")
        assert got.status_code == 200
        assert "9" in [str(e["sequence"]) for e in got.json()["events"]]
    # Everything older is gone: only the old messages a late callback touched may stay.
    left = await scalar(
        engine,
        select(func.count()).where(messages.c.id.in_([i for i, _ in old])),
    )
    assert left <= len(late)
    left_ids = {i for i in await _ids_of(engine, [i for i, _ in old])}
    assert left_ids <= {i for i, _ in late}


async def _ids_of(engine: AsyncEngine, ids: list[int]) -> set[int]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(messages.c.id).where(messages.c.id.in_(ids)))
        return {int(i) for i in rows.scalars()}


# ---- the live stream after a purge ---------------------------------------------------------


async def test_live_stream_resumes_past_purged_ids(
    make_settings: Any, db_url: str, engine: AsyncEngine
) -> None:
    old = await seed_old(engine, 4)
    first_old_event = await scalar(engine, select(func.min(status_events.c.id)))
    async with _serving(make_settings(database_url=db_url)) as host, _http(host) as http:
        await _journey(http, new_uuid())  # young changes, after the old ones
        async with engine.connect() as conn:
            before_purge = await conn.scalar(select(func.max(status_events.c.id)))
        other = make_writer(engine)  # another process's writer (`plivo-tracker purge`)
        try:
            result = await purger(other, 100).run_once()
        finally:
            await other.close()
        assert result is not None
        assert result.counts()["messages"] == len(old)
        async with websockets.connect(
            f"ws://{host}/ws?since={first_old_event}", additional_headers=AUTH
        ) as ws:
            truth = await _changes_in_db(db_url)
            assert all(i > first_old_event for i, _, _ in truth)
            replayed = await _frames(ws, len(truth))
            assert [(f["id"], f["status"], f["previous_status"]) for f in replayed] == truth
            await _journey(http, new_uuid())
            live = await _frames(ws, 3)
    assert min(f["id"] for f in live) > before_purge  # no id handed out twice


# ---- serve purges by itself ----------------------------------------------------------------


async def test_serve_purges_once_per_interval_by_itself(
    simulator_service: ServiceOpener, engine: AsyncEngine
) -> None:
    old = await seed_old(engine, 5)
    async with engine.begin() as conn:  # a newer message: the newest id always stays
        await conn.run_sync(lambda c: add_message(c, utcnow(), timedelta(0), "queued"))
    scenario = ScenarioConfig(speed=300, fail_rate=0, undelivered_rate=0)
    async with simulator_service(scenario, purge_interval_seconds=0.2) as (client, _):
        for _ in range(200):
            if not await _ids_of(engine, [i for i, _ in old]):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("serve did not purge within 10 s")
        metrics = (await client.get("/metrics")).text
    assert 'plivo_tracker_purged_total{table="messages"}' in metrics
    assert 'plivo_tracker_purged_total{table="status_events"}' in metrics
    owner = await scalar(engine, select(leases.c.owner).where(leases.c.name == "purge"))
    assert str(owner).startswith("purge-")


# ---- STORE_MESSAGE_TEXT=false ---------------------------------------------------------------


async def _wait(client: httpx.AsyncClient, ids: list[int], done: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(20):
            while True:
                found = [(await client.get(f"/api/messages/{i}")).json() for i in ids]
                if all(done(m) for m in found):
                    return found
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"not there after 20 s: {[m['status'] for m in found]}")


async def _texts(engine: AsyncEngine, ids: list[int]) -> list[tuple[Any, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(messages.c.text, messages.c.media_urls).where(messages.c.id.in_(ids))
        )
        return [tuple(r) for r in rows]


async def test_without_stored_text_the_text_goes_once_plivo_accepted_it(
    simulator_service: ServiceOpener, engine: AsyncEngine
) -> None:
    """Resends off: nothing needs the text after Plivo's 202. Callbacks are lost here, so the
    messages stay `queued`: the text is gone before any final status."""
    scenario = ScenarioConfig(speed=300, fail_rate=0, undelivered_rate=0, callback_drop_rate=1.0)
    async with simulator_service(scenario, store_message_text=False, resend_error_codes="none") as (
        client,
        app,
    ):
        resp = await client.post(
            "/api/messages",
            json={"to": ["+14155550101", "+14155550102"], "text": "Your code is 482193"},
        )
        assert resp.status_code == 202
        ids = [m["id"] for m in resp.json()["messages"]]
        got = await _wait(client, ids, lambda m: m["status"] == "queued")
        sim: SimulatedPlivo = app.state.sending.simulator
        for m in got:
            assert m["text"] is None
            assert m["content_erased_at"] is not None
            assert sim.messages[m["message_uuid"]]["_text"] == "Your code is 482193"  # sent
        assert await _texts(engine, ids) == [(None, None)] * 2
        listed = (await client.get("/api/messages")).json()["messages"]
        assert {m["id"]: m["text"] for m in listed} == {i: None for i in ids}


async def test_without_stored_text_messages_are_delivered_and_keep_no_text(
    simulator_service: ServiceOpener, engine: AsyncEngine
) -> None:
    """Resends on (the default): the text stays until the final status, then goes."""
    scenario = ScenarioConfig(speed=300, fail_rate=0, undelivered_rate=0, dup_rate=0.2)
    async with simulator_service(scenario, store_message_text=False) as (client, app):
        body = {"to": [f"+1415555{i:04d}" for i in range(6)], "text": "Your code is 482193"}
        resp = await client.post("/api/messages", json=body, headers={"Idempotency-Key": "k-1"})
        assert resp.status_code == 202
        ids = [m["id"] for m in resp.json()["messages"]]
        final = await _wait(client, ids, lambda m: m["status"] == "delivered")
        assert all(m["text"] is None and m["content_erased_at"] for m in final)
        assert await _texts(engine, ids) == [(None, None)] * len(ids)
        assert app.state.sending.simulator.accepted == len(ids)
        again = await client.post("/api/messages", json=body, headers={"Idempotency-Key": "k-1"})
        assert again.json() == resp.json()  # a retry is still recognised ...
    async with engine.connect() as conn:
        row = (await conn.execute(select(idempotency_keys))).one()
    # ... from a fingerprint that leaves the text out, and an answer that never held it.
    assert row.request_hash == request_hash(SendRequest(**body), with_content=False)
    assert row.request_hash != request_hash(SendRequest(**body))
    assert "482193" not in row.response


async def test_with_stored_text_nothing_is_erased(
    simulator_service: ServiceOpener, engine: AsyncEngine
) -> None:
    scenario = ScenarioConfig(speed=300, fail_rate=0, undelivered_rate=0)
    async with simulator_service(scenario, resend_error_codes="none") as (client, _):
        resp = await client.post("/api/messages", json={"to": "+14155550101", "text": "hello"})
        ids = [m["id"] for m in resp.json()["messages"]]
        final = await _wait(client, ids, lambda m: m["status"] == "delivered")
    assert final[0]["text"] == "hello"
    assert final[0]["content_erased_at"] is None


def test_settings_name_what_is_erased(make_settings: Any) -> None:
    assert make_settings().erasure is None
    kept_for_resends = make_settings(store_message_text=False).erasure
    assert kept_for_resends is not None
    assert kept_for_resends.resends
    erasure = make_settings(store_message_text=False, resend_error_codes="none").erasure
    assert erasure is not None
    assert not erasure.resends


async def test_without_stored_text_a_refused_send_keeps_no_text(
    simulator_service: ServiceOpener, engine: AsyncEngine
) -> None:
    """Plivo refuses the send for good (400): failed, and the text goes in that transaction."""
    scenario = ScenarioConfig(speed=300, fail_rate=0, undelivered_rate=0)
    async with simulator_service(scenario, store_message_text=False) as (client, app):
        sim: SimulatedPlivo = app.state.sending.simulator
        sim.faults.fail_first = 1
        sim.faults.fail_status = 400
        resp = await client.post("/api/messages", json={"to": "+14155550101", "text": "hello"})
        ids = [m["id"] for m in resp.json()["messages"]]
        final = await _wait(client, ids, lambda m: m["status"] == "failed")
    assert final[0]["text"] is None
    assert final[0]["content_erased_at"] is not None
    assert await _texts(engine, ids) == [(None, None)]


async def test_without_stored_text_an_unknown_send_keeps_its_text_until_resolved(
    simulator_service: ServiceOpener, engine: AsyncEngine
) -> None:
    """Two sends answered 500 after Plivo created them cannot be told apart: both wait as
    `unknown`, and keep their text (an operator may resend). Adopting a UUID erases it at once
    (resends off); a resend keeps it until Plivo accepts the new attempt."""
    scenario = ScenarioConfig(speed=300, fail_rate=0, undelivered_rate=0)
    async with simulator_service(
        scenario,
        store_message_text=False,
        resend_error_codes="none",
        reconcile_after_seconds=0,
        reconcile_max_lookups=1,
        plivo_list_per_minute=0,
    ) as (client, app):
        sim: SimulatedPlivo = app.state.sending.simulator
        sim.faults.fail_after_create = 2
        await client.post("/api/dispatch/pause", json={"reason": "both sends in one pass"})
        ids = []
        for _ in range(2):
            resp = await client.post("/api/messages", json={"to": "+14155550101", "text": "hi"})
            ids += [m["id"] for m in resp.json()["messages"]]
        assert (await client.post("/api/dispatch/resume", json={})).status_code == 200
        unknown = await _wait(client, ids, lambda m: m["status"] == "unknown")
        assert [m["text"] for m in unknown] == ["hi", "hi"]
        adopt = {"action": "adopt", "message_uuid": list(sim.messages)[0]}
        assert (await client.post(f"/api/messages/{ids[0]}/resolve", json=adopt)).status_code == 200
        adopted = (await client.get(f"/api/messages/{ids[0]}")).json()
        assert adopted["text"] is None
        assert adopted["content_erased_at"] is not None
        resend = {"action": "resend"}
        assert (
            await client.post(f"/api/messages/{ids[1]}/resolve", json=resend)
        ).status_code == 200
        sent = await _wait(client, ids[1:], lambda m: m["status"] not in ("accepted", "unknown"))
        assert sent[0]["text"] is None
    assert sim.accepted == 3
