"""The live hub alone (a list stands in for the event table): order, filters, bounded queues."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from plivo_tracker.live.hub import Filter, LiveHub, is_change, to_frame

AT = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _event(id_: int, message_id: int, status: str, previous: str | None) -> dict[str, Any]:
    return {
        "id": id_,
        "message_id": message_id,
        "message_uuid": f"uuid-{message_id}",
        "message_status": status,
        "previous_status": previous,
        "error_code": "30" if status == "undelivered" else None,
        "received_at": AT,
    }


class Table:
    """The committed events, as the hub reads them."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    async def read_after(self, after: int, limit: int) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["id"] > after][:limit]

    async def head(self) -> int:
        return self.rows[-1]["id"] if self.rows else 0


def test_frame_shape_and_what_counts_as_a_change() -> None:
    frame = to_frame(_event(7, 3, "undelivered", "sent"))
    assert json.loads(frame.text) == {
        "id": 7,
        "type": "status",
        "message_id": 3,
        "message_uuid": "uuid-3",
        "status": "undelivered",
        "previous_status": "sent",
        "error_code": "30",
        "at": "2026-11-23T12:00:00Z",
    }
    assert is_change(_event(1, 1, "queued", None))
    assert not is_change(_event(2, 1, "delivered", "delivered"))  # a late `sent` after delivered


async def test_publishes_changes_after_the_head_in_id_order() -> None:
    table = Table()
    table.rows.append(_event(1, 1, "queued", None))
    hub = LiveHub(table.read_after, table.head)
    await hub.start()
    sub = hub.subscribe(Filter())
    table.rows += [
        _event(2, 1, "sent", "queued"),
        _event(3, 1, "sent", "sent"),  # no change: not published, but read past
        _event(4, 2, "queued", None),
    ]
    await hub.catch_up()
    got = [sub.queue.get_nowait().id for _ in range(sub.queue.qsize())]
    assert got == [2, 4]
    assert hub.last_id == 4


async def test_filters() -> None:
    table = Table()
    hub = LiveHub(table.read_after, table.head)
    await hub.start()
    one = hub.subscribe(Filter(message_id=2))
    finals = hub.subscribe(Filter(statuses=frozenset({"delivered"})))
    table.rows += [
        _event(1, 1, "delivered", "sent"),
        _event(2, 2, "sent", "queued"),
        _event(3, 2, "delivered", "sent"),
    ]
    await hub.catch_up()
    assert [one.queue.get_nowait().id for _ in range(one.queue.qsize())] == [2, 3]
    assert [finals.queue.get_nowait().id for _ in range(finals.queue.qsize())] == [1, 3]


async def test_a_slow_subscriber_is_dropped_and_nobody_waits() -> None:
    table = Table()
    hub = LiveHub(table.read_after, table.head, queue_size=10)
    await hub.start()
    slow, fast = hub.subscribe(Filter()), hub.subscribe(Filter())
    table.rows += [_event(i, i, "queued", None) for i in range(1, 26)]
    for start in range(0, 25, 5):  # the fast one keeps up, the slow one never reads
        hub.publish([to_frame(r) for r in table.rows[start : start + 5]])
        while not fast.queue.empty():
            fast.queue.get_nowait()
    assert slow.reason == "overflow"
    assert slow.ended.is_set()
    assert fast.reason is None


async def test_run_wakes_on_demand_and_stop_ends_subscribers() -> None:
    table = Table()
    hub = LiveHub(table.read_after, table.head, poll_interval=30)
    sub = hub.subscribe(Filter())
    task = asyncio.create_task(hub.run())
    await asyncio.sleep(0.01)
    table.rows.append(_event(1, 1, "queued", None))
    hub.wake()
    frame = await asyncio.wait_for(sub.queue.get(), 2)  # long before the 30 s poll
    assert frame.id == 1
    hub.stop()
    await asyncio.wait_for(task, 2)
    assert sub.reason == "shutdown"


async def test_run_waits_for_the_database_at_start() -> None:
    table = Table()
    calls = 0

    async def flaky_head() -> int:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise OSError("database is down")
        return 5

    hub = LiveHub(table.read_after, flaky_head, poll_interval=0.01)
    task = asyncio.create_task(hub.run())
    for _ in range(200):
        if hub.last_id == 5:
            break
        await asyncio.sleep(0.01)
    hub.stop()
    await asyncio.wait_for(task, 2)
    assert calls >= 3
    assert hub.last_id == 5


class CountingTable(Table):
    """A Table that counts the hub's reads and announces each one in `entered` as it starts;
    `gate`, when set, holds each read until it is opened."""

    def __init__(self) -> None:
        super().__init__()
        self.row_reads = 0
        self.head_reads = 0
        self.entered: asyncio.Queue[str] = asyncio.Queue()
        self.gate: asyncio.Event | None = None

    async def read_after(self, after: int, limit: int) -> list[dict[str, Any]]:
        self.row_reads += 1
        self.entered.put_nowait("rows")
        if self.gate is not None:
            await self.gate.wait()
        return await super().read_after(after, limit)

    async def head(self) -> int:
        self.head_reads += 1
        self.entered.put_nowait("head")
        if self.gate is not None:
            await self.gate.wait()
        return await super().head()


async def test_with_nobody_subscribed_a_pass_reads_only_the_newest_id() -> None:
    table = CountingTable()
    hub = LiveHub(table.read_after, table.head)
    await hub.start()
    table.rows += [_event(1, 1, "queued", None), _event(2, 1, "sent", "queued")]
    await hub.follow()
    assert (table.row_reads, hub.last_id) == (0, 2)
    # Someone subscribes: from the cursor on, every change is read and published.
    sub = hub.subscribe(Filter())
    table.rows.append(_event(3, 1, "delivered", "sent"))
    await hub.follow()
    assert [sub.queue.get_nowait().id for _ in range(sub.queue.qsize())] == [3]
    assert table.row_reads == 1
    # And when they have gone, the feed stops reading rows again.
    hub.unsubscribe(sub)
    table.rows.append(_event(4, 2, "queued", None))
    await hub.follow()
    assert (table.row_reads, hub.last_id) == (1, 4)


async def test_a_subscriber_arriving_during_the_newest_id_read_misses_nothing() -> None:
    """The newest id read may have started before the subscriber took its start: its result
    must not move the cursor past changes that subscriber has not been given."""
    table = CountingTable()
    hub = LiveHub(table.read_after, table.head)
    await hub.start()
    assert table.entered.get_nowait() == "head"
    table.rows.append(_event(1, 1, "queued", None))
    table.gate = asyncio.Event()
    idle_pass = asyncio.create_task(hub.follow())
    assert await table.entered.get() == "head"  # the pass is now inside the newest id read
    sub = hub.subscribe(Filter())
    start = hub.last_id  # what the route gives a subscriber without ?since=
    table.rows.append(_event(2, 1, "sent", "queued"))  # committed after its start
    table.gate.set()
    await idle_pass
    assert start == 0
    assert [sub.queue.get_nowait().id for _ in range(sub.queue.qsize())] == [1, 2]
    assert hub.last_id == 2


async def test_a_burst_of_wakes_costs_one_more_pass() -> None:
    table = CountingTable()
    hub = LiveHub(table.read_after, table.head, poll_interval=30)
    await hub.start()
    assert table.entered.get_nowait() == "head"
    table.gate = asyncio.Event()
    task = asyncio.create_task(hub.run())
    for _ in range(100):  # before the feed has even looked
        hub.wake()
    assert await table.entered.get() == "head"  # one pass, now inside its read
    for _ in range(100):  # commits landing while it reads
        hub.wake()
    table.gate.set()
    assert await table.entered.get() == "head"  # one more pass for all of those
    for _ in range(100):  # give the feed every chance to read again
        await asyncio.sleep(0)
    hub.stop()
    await asyncio.wait_for(task, 2)
    assert table.entered.empty()
    assert (table.head_reads, table.row_reads) == (3, 0)  # start, and two passes
