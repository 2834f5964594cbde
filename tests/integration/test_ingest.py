"""Ingestion on real SQLite and PostgreSQL: the group commit appends to the journal, the
projector applies it; order, duplicates, parts, faults. Every read of a message first applies
what is journaled (one projector pass run here), as the server's projector would."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, select
from sqlalchemy.ext.asyncio import AsyncEngine

from plivo_tracker.db.engine import make_engine, make_writer
from plivo_tracker.inbound.committer import GroupCommitter, StoreFailed
from plivo_tracker.inbound.items import CallbackItem, Outcome
from plivo_tracker.inbound.spool import Spool
from plivo_tracker.messages import local_changes
from plivo_tracker.messages import repository as repo
from plivo_tracker.messages.local_changes import LocalChange
from plivo_tracker.messages.models import messages, status_events
from plivo_tracker.messages.status import MessageStatus
from tests.conftest import (
    callback_fields,
    callback_item,
    get_message,
    new_nonce,
    new_uuid,
    project_all,
    set_poison,
)

item = callback_item


@pytest.fixture
async def committer(engine: AsyncEngine) -> Any:
    c = GroupCommitter(engine, max_batch=64)
    c.start()
    yield c
    await c.stop()


async def submit_all(c: GroupCommitter, items: list[CallbackItem]) -> list[Outcome]:
    return list(await asyncio.gather(*(c.submit(i) for i in items)))


async def status_of(engine: AsyncEngine, uuid: str) -> str:
    msg = await get_message(engine, uuid)
    assert msg is not None
    return msg.status


LIFECYCLES = {
    "delivered": [("queued", "1"), ("sent", "2"), ("delivered", "3")],
    "undelivered": [("queued", "1"), ("sent", "2"), ("undelivered", "3")],
    "failed": [("queued", "1"), ("failed", "2")],
    "sent": [("queued", "1"), ("sent", "2")],
}


async def test_shuffled_duplicated_lifecycles_end_right(
    engine: AsyncEngine, committer: GroupCommitter
) -> None:
    """Out of order, with Plivo retries (new nonce) mixed in, all in concurrent batches."""
    rng = random.Random(7)
    expected: dict[str, str] = {}
    items: list[CallbackItem] = []
    for n in range(60):
        final = list(LIFECYCLES)[n % len(LIFECYCLES)]
        uuid = new_uuid()
        expected[uuid] = final
        for status, seq in LIFECYCLES[final]:
            extra = {"ErrorCode": "30"} if status in ("undelivered", "failed") else {}
            fields = callback_fields(uuid, status, Sequence=seq, **extra)
            items.append(item(fields))
            if rng.random() < 0.3:
                items.append(item(fields))  # duplicate delivery
    rng.shuffle(items)
    outcomes = await submit_all(committer, items)
    assert set(outcomes) <= {Outcome.STORED, Outcome.DUPLICATE}
    stored = sum(1 for o in outcomes if o == Outcome.STORED)
    assert stored == sum(len(LIFECYCLES[f]) for f in expected.values())
    for uuid, final in expected.items():
        assert await status_of(engine, uuid) == final
    msg = await get_message(engine, next(u for u, f in expected.items() if f == "failed"))
    assert msg is not None
    assert msg.error_code == "30"
    assert msg.error_meaning is not None
    assert "Spam" in msg.error_meaning


async def test_conflicting_terminal_events_are_kept_and_flagged(
    engine: AsyncEngine, committer: GroupCommitter
) -> None:
    uuid = new_uuid()
    await committer.submit(item(callback_fields(uuid, "delivered", Sequence="5")))
    await committer.submit(item(callback_fields(uuid, "undelivered", Sequence="4", ErrorCode="80")))
    msg = await get_message(engine, uuid)
    assert msg is not None
    assert msg.status == "delivered"
    assert msg.has_conflict
    assert [e.effect for e in msg.events] == ["applied", "conflict_kept"]
    # A higher Sequence wins the conflict.
    await committer.submit(item(callback_fields(uuid, "failed", Sequence="9", ErrorCode="420")))
    msg = await get_message(engine, uuid)
    assert msg is not None
    assert msg.status == "failed"
    assert msg.error_code == "420"


async def test_same_nonce_twice_in_one_batch_is_a_replay(
    engine: AsyncEngine, committer: GroupCommitter
) -> None:
    nonce = new_nonce()
    fields = callback_fields(new_uuid(), "sent")
    outcomes = await submit_all(committer, [item(fields, nonce), item(fields, nonce)])
    assert sorted(outcomes) == sorted([Outcome.STORED, Outcome.REPLAY])


async def test_old_style_multipart_rolls_up_and_failure_is_not_hidden(
    engine: AsyncEngine, committer: GroupCommitter
) -> None:
    parent, p2, p3 = new_uuid(), new_uuid(), new_uuid()

    def part(uuid: str, info: str, status: str, **extra: str) -> CallbackItem:
        return item(callback_fields(uuid, status, ParentMessageUUID=parent, PartInfo=info, **extra))

    await submit_all(
        committer,
        [part(parent, "1 of 3", "delivered"), part(p2, "2 of 3", "delivered")],
    )
    msg = await get_message(engine, parent)
    assert msg is not None
    assert msg.status == "sent"  # part 3 not heard of yet: not delivered
    await committer.submit(part(p3, "3 of 3", "undelivered", ErrorCode="70", Sequence="5"))
    msg = await get_message(engine, p2)  # found through a part's UUID too
    assert msg is not None
    assert msg.message_uuid == parent
    assert msg.status == "undelivered"
    assert msg.error_code == "70"
    assert sorted(p.part_index or 0 for p in msg.parts) == [1, 2, 3]
    # A late "delivered" for the failed part cannot hide the failure (terminal never reverts).
    await committer.submit(part(p3, "3 of 3", "delivered", Sequence="4"))
    assert await status_of(engine, parent) == "undelivered"


async def test_all_parts_delivered_makes_parent_delivered(
    engine: AsyncEngine, committer: GroupCommitter
) -> None:
    parent, p2 = new_uuid(), new_uuid()
    for uuid, info in ((p2, "2 of 2"), (parent, "1 of 2")):
        for status in ("sent", "delivered"):
            fields = callback_fields(uuid, status, ParentMessageUUID=parent, PartInfo=info)
            await committer.submit(item(fields))
    assert await status_of(engine, parent) == "delivered"


async def test_a_part_claimed_by_a_second_parent_is_stored_not_spooled(
    engine: AsyncEngine, committer: GroupCommitter
) -> None:
    """An incoherent but authentic callback (found by the fuzzer): a part UUID that is already
    another message's part, named under a new parent. It used to fail its batch with a
    KeyError on every replay; now it is stored and counts for the parent it names."""
    first, second, part = new_uuid(), new_uuid(), new_uuid()
    fields = callback_fields(part, "sent", ParentMessageUUID=first, PartInfo="1 of 2")
    assert await committer.submit(item(fields)) == Outcome.STORED
    fields = callback_fields(part, "delivered", ParentMessageUUID=second, PartInfo="2 of 2")
    assert await committer.submit(item(fields)) == Outcome.STORED
    assert await status_of(engine, second) == "delivered"
    assert await status_of(engine, first) == "sent"


async def test_new_style_long_message_is_one_message(
    engine: AsyncEngine, committer: GroupCommitter
) -> None:
    uuid = new_uuid()
    fields = callback_fields(uuid, "delivered", Units="3", PartInfo="reserved")
    await committer.submit(item(fields))
    msg = await get_message(engine, uuid)
    assert msg is not None
    assert msg.status == "delivered"
    assert msg.units == 3
    assert msg.parts == []


POISON = "poison-0000-0000-0000-000000000000"


async def _install_poison_trigger(engine: AsyncEngine) -> None:
    """A real database fault for one MessageUUID: appending its report raises."""
    await set_poison(engine, "journal", "message_key", POISON, on=True)


async def _drop_poison_trigger(engine: AsyncEngine) -> None:
    await set_poison(engine, "journal", "message_key", POISON, on=False)


async def test_bad_item_does_not_sink_its_batch(engine: AsyncEngine, tmp_path: Path) -> None:
    await _install_poison_trigger(engine)
    spool = Spool(tmp_path / "spool")
    c = GroupCommitter(engine, spool=spool.write)
    c.start()
    try:
        good = [item(callback_fields(new_uuid(), "sent")) for _ in range(5)]
        bad = item(callback_fields(POISON, "sent"))
        results = await submit_all(c, [*good[:3], bad, *good[3:]])
    finally:
        await c.stop()
        await _drop_poison_trigger(engine)
    # The good ones are committed; the poisoned one is acknowledged because it was spooled.
    assert results == [Outcome.STORED] * 6
    async with engine.connect() as conn:
        stored = await repo.nonces_stored(conn, [i.nonce for i in [*good, bad] if i.nonce])
    assert stored == {g.nonce for g in good}
    assert len(spool.pending()) == 1
    # Once the fault is gone, the replayer commits it.
    replayer = GroupCommitter(engine)
    try:
        assert await replayer.replay(spool) == 1
    finally:
        await replayer.stop()
    assert await status_of(engine, POISON) == "sent"


async def test_database_down_spools_then_replays(
    engine: AsyncEngine, db_url: str, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    broken = make_engine("postgresql+asyncpg://127.0.0.1:1/none")  # nothing listens there
    down = GroupCommitter(broken, spool=spool.write)
    down.start()
    items = [item(callback_fields(new_uuid(), "delivered", Sequence="3")) for _ in range(10)]
    try:
        outcomes = await submit_all(down, items)
    finally:
        await down.stop()
        await broken.dispose()
    assert outcomes == [Outcome.STORED] * 10  # acknowledged because durably spooled
    assert spool.pending()

    up = GroupCommitter(engine)
    try:
        assert await up.replay(spool) == 10
        assert spool.pending() == []
        assert await up.replay(spool) == 0
    finally:
        await up.stop()
    await project_all(engine)
    async with engine.connect() as conn:
        stored = await repo.nonces_stored(conn, [i.nonce for i in items if i.nonce])
        events = (await conn.execute(select(status_events.c.status))).scalars().all()
    assert len(stored) == 10
    assert events == ["delivered"] * 10


async def test_database_and_spool_down_fails_the_request(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the spool directory should be")
    broken = make_engine("postgresql+asyncpg://127.0.0.1:1/none")
    down = GroupCommitter(broken, spool=Spool(blocker / "spool").write)
    down.start()
    try:
        with pytest.raises(StoreFailed):
            await down.submit(item(callback_fields(new_uuid(), "sent")))
    finally:
        await down.stop()
        await broken.dispose()


async def test_stop_commits_everything_queued(engine: AsyncEngine) -> None:
    c = GroupCommitter(engine, max_batch=8)
    c.start()
    items = [item(callback_fields(new_uuid(), "sent")) for _ in range(40)]
    tasks = [asyncio.create_task(c.submit(i)) for i in items]
    await asyncio.sleep(0)
    await c.stop()
    async with engine.connect() as conn:
        stored = await repo.nonces_stored(conn, [i.nonce for i in items if i.nonce])
    assert len(stored) == 40  # committed before stop() returned
    assert await asyncio.wait_for(asyncio.gather(*tasks), 5) == [Outcome.STORED] * 40


def our_message(conn: Connection, now: datetime, **values: Any) -> int:
    """A message of ours, born `accepted` (as the API stores it), and its birth journaled."""
    row = {
        "origin": "api",
        "direction": "outbound",
        "status": "accepted",
        "has_conflict": False,
        "to_number": "+14155550101",
        "created_at": now,
        "updated_at": now,
        **values,
    }
    local = int(conn.execute(messages.insert().returning(messages.c.id), [row]).scalar_one())
    local_changes.journal(conn, [LocalChange(local, MessageStatus.ACCEPTED)], now)
    return local


def queued(local: int, uuid: str) -> LocalChange:
    ours = frozenset({MessageStatus.ACCEPTED, MessageStatus.UNKNOWN})
    return LocalChange(local, MessageStatus.QUEUED, ours, message_uuid=uuid)


async def test_send_adopts_placeholder_created_by_fast_callback(
    engine: AsyncEngine, committer: GroupCommitter
) -> None:
    uuid = new_uuid()
    # The callback beats the send response: a placeholder holds its status.
    await committer.submit(item(callback_fields(uuid, "sent", Sequence="2")))
    placeholder = await get_message(engine, uuid)
    assert placeholder is not None
    now = datetime.now(UTC)
    writer = make_writer(engine)

    def sent_as(uuid_: str) -> Callable[[Connection], int]:
        def record(conn: Connection) -> int:
            local = our_message(conn, now)
            local_changes.journal(conn, [queued(local, uuid_)], now)
            return local

        return record

    try:
        local_id = await writer.run(sent_as(uuid))
        assert await get_message(engine, str(placeholder.id)) is None  # merged away
        msg = await get_message(engine, uuid)
        assert msg is not None
        assert msg.id == local_id
        assert msg.origin == "api"
        assert msg.status == "sent"  # Plivo's word wins over our 202
        assert [(e.status, e.effect) for e in msg.events] == [
            ("sent", "applied"),
            ("accepted", "applied"),
            ("queued", "stale"),
        ]
        assert msg.events[-1].raw["merged_from"] == placeholder.id
        # Later callbacks land on the adopted message.
        await committer.submit(item(callback_fields(uuid, "delivered", Sequence="3")))
        assert await status_of(engine, str(local_id)) == "delivered"

        # A UUID nobody holds is simply taken.
        fresh = new_uuid()
        other = await writer.run(sent_as(fresh))
        msg = await get_message(engine, fresh)
        assert msg is not None
        assert (msg.id, msg.status) == (other, "queued")

        # A UUID another message of ours holds is never taken: flagged, with the holder named.
        third = await writer.run(sent_as(fresh))
        msg = await get_message(engine, str(third))
        assert msg is not None
        assert (msg.message_uuid, msg.has_conflict, msg.status) == (None, True, "queued")
        assert msg.events[-1].raw["uuid_taken_by"] == other
    finally:
        await writer.close()


async def test_two_writers_on_the_same_messages(engine: AsyncEngine, db_url: str) -> None:
    """Two committers (as two server processes would) ingest the same messages concurrently:
    every event is stored once, no status goes backwards, no deadlock loses a callback."""
    other_engine = make_engine(db_url)
    a, b = GroupCommitter(engine, max_batch=16), GroupCommitter(other_engine, max_batch=16)
    a.start()
    b.start()
    rng = random.Random(11)
    uuids = [new_uuid() for _ in range(40)]
    items = []
    for uuid in uuids:
        for status, seq in LIFECYCLES["delivered"]:
            fields = callback_fields(uuid, status, Sequence=seq)
            items.append(item(fields))
            items.append(item(fields))  # the same callback retried: may land on either writer
    rng.shuffle(items)
    try:
        outcomes = await asyncio.gather(
            *((a if i % 2 else b).submit(it) for i, it in enumerate(items))
        )
    finally:
        await a.stop()
        await b.stop()
        await other_engine.dispose()
    assert outcomes.count(Outcome.STORED) == len(uuids) * 3
    assert outcomes.count(Outcome.DUPLICATE) == len(uuids) * 3
    for uuid in uuids:
        assert await status_of(engine, uuid) == "delivered"
