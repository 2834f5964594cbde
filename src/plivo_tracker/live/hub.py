"""In-process fan-out of committed status changes, fed from the database in event-id order.

The hub never takes changes from the code that made them: a feed task reads `status_events`
with an id above the last one it published, and publishes what it finds in id order. Event ids
ascend in commit order on both databases (docs/adr/0006), so reading "everything above N" after
any commit can never skip a change, and a change is never shown before it is committed. The
feed is woken by this process's commits (Writer.on_commit), by NOTIFY from other processes on
PostgreSQL, and polls every `poll_interval` as a safety net (and for other processes on SQLite).
Wakes are coalesced: however many arrive while the feed waits or reads, they cost one more pass.

While nobody is subscribed the feed reads no event rows at all: each pass only moves its cursor
to the newest committed id (see `LiveHub.follow`). Reading and serialising every change for no
one was 5.9 % of the server's CPU under callback load (docs/adr/0011).

Publishing never blocks: every subscriber has a bounded queue, and one that is full is marked
overflowed and dropped (its socket closes with 4408 and the client resumes with ?since=).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from plivo_tracker import metrics
from plivo_tracker.db.engine import Reader
from plivo_tracker.messages import repository as repo
from plivo_tracker.messages.status import FAILURES
from plivo_tracker.plivo.inbound import KIND as INBOUND

log = structlog.get_logger(__name__)

PAGE = 1000  # events per read


@dataclass(frozen=True, slots=True)
class Frame:
    """One status change (or an inbound message), serialised once and shared by every
    subscriber."""

    id: int
    message_id: int
    status: str
    text: str


def is_change(row: dict[str, Any]) -> bool:
    """Did this event change its message's status? (Only changes are streamed.)"""
    status = row["message_status"]
    return status is not None and status != row["previous_status"]


def _at(row: dict[str, Any]) -> str:
    at: datetime = row["received_at"]
    return at.isoformat().replace("+00:00", "Z")


def message_frame(row: dict[str, Any]) -> Frame:
    """The frame of an inbound message's arrival: the message itself, in the same id sequence
    as the status changes."""
    media = row.get("media_urls")
    body = {
        "id": row["id"],
        "type": "message",
        "message_id": row["message_id"],
        "message_uuid": row["message_uuid"],
        "direction": "inbound",
        "from": row["from_number"],
        "to": row["to_number"],
        "text": row["text"],
        "media_urls": json.loads(media) if media else [],
        "status": row["message_status"],
        "at": _at(row),
    }
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return Frame(row["id"], row["message_id"], row["message_status"], text)


def to_frame(row: dict[str, Any]) -> Frame:
    """The WebSocket frame of one event row (see messages.repository.events_after)."""
    if row.get("source") == INBOUND:
        return message_frame(row)
    status = row["message_status"]
    error_code = row["error_code"] if status in _FAILURE_NAMES else None
    body = {
        "id": row["id"],
        "type": "status",
        "message_id": row["message_id"],
        "message_uuid": row["message_uuid"],
        "status": status,
        "previous_status": row["previous_status"],
        "error_code": error_code,
        "at": _at(row),
    }
    detail = row.get("detail")
    if detail and "merged_from" in detail:
        # A send adopted the placeholder a fast callback had made: that message id is gone.
        body["merged_from"] = json.loads(detail).get("merged_from")
    return Frame(row["id"], row["message_id"], status, json.dumps(body, separators=(",", ":")))


_FAILURE_NAMES = frozenset(s.value for s in FAILURES)


@dataclass(frozen=True, slots=True)
class Filter:
    """What a subscriber wants: one message and/or some statuses (None: everything)."""

    message_id: int | None = None
    statuses: frozenset[str] | None = None

    def __call__(self, frame: Frame) -> bool:
        if self.message_id is not None and frame.message_id != self.message_id:
            return False
        return self.statuses is None or frame.status in self.statuses


@dataclass(eq=False)
class Subscriber:
    filter: Filter
    queue: asyncio.Queue[Frame]
    # Set when the queue overflowed or the hub closed: the socket must end now.
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str | None = None


ReadAfter = Callable[[int, int], Awaitable[list[dict[str, Any]]]]


async def pages_of_changes(
    read_after: ReadAfter, after: int
) -> AsyncIterator[tuple[list[Frame], int]]:
    """Every change above `after` in id order, a page at a time, each with the last event id
    read (events that changed nothing are read past, not streamed). The hub's feed and every
    ?since= replay read the same way."""
    while True:
        rows = await read_after(after, PAGE)
        if rows:
            after = rows[-1]["id"]
        yield [to_frame(r) for r in rows if is_change(r)], after
        if len(rows) < PAGE:
            return


class LiveHub:
    def __init__(
        self,
        read_after: ReadAfter,
        read_head: Callable[[], Awaitable[int]],
        *,
        queue_size: int = 10_000,
        poll_interval: float = 1.0,
    ) -> None:
        self._read_after = read_after
        self._read_head = read_head
        self._queue_size = queue_size
        self._poll_interval = poll_interval
        self._subscribers: set[Subscriber] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self.last_id = 0  # the newest event id read (and published, if it was a change)
        self._started = False
        self.on_idle: Callable[[], Awaitable[object]] | None = None  # e.g. reconnect LISTEN

    def wake(self) -> None:
        """Something may have been committed: look now. Cheap and coalesced: it only sets an
        event, so a burst of commits (and NOTIFYs) while the feed waits or reads costs a
        single further pass, not one read per wake."""
        self._wake.set()

    def subscribe(self, flt: Filter) -> Subscriber:
        sub = Subscriber(flt, asyncio.Queue(self._queue_size))
        self._subscribers.add(sub)
        metrics.LIVE_SUBSCRIBERS.set(len(self._subscribers))
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)
        metrics.LIVE_SUBSCRIBERS.set(len(self._subscribers))

    def publish(self, frames: list[Frame]) -> None:
        for frame in frames:
            for sub in self._subscribers:
                if sub.reason is None and sub.filter(frame):
                    try:
                        sub.queue.put_nowait(frame)
                    except asyncio.QueueFull:
                        self._end(sub, "overflow")
                        metrics.LIVE_DROPPED.inc()
        if frames:
            metrics.LIVE_FRAMES.inc(len(frames))

    async def start(self) -> None:
        """Start from the newest committed event: subscribers replay older ones themselves."""
        self.last_id = await self._read_head()
        self._started = True

    async def run(self) -> None:
        while not self._started and not self._stopping:
            try:
                await self.start()
            except Exception as exc:  # noqa: BLE001 - database down at start-up: wait for it
                log.warning("live.start_failed", error=repr(exc))
                await asyncio.sleep(self._poll_interval)
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)
            # Cleared before reading: a commit that lands during the read sets it again, and
            # its change (maybe missed by this read's snapshot) is read by the next pass.
            self._wake.clear()
            if self._stopping:
                break
            try:
                await self.follow()
                if self.on_idle is not None:
                    await self.on_idle()
            except Exception as exc:  # noqa: BLE001 - database down: try again at the next wake
                log.warning("live.read_failed", error=repr(exc))
                await asyncio.sleep(self._poll_interval)

    async def follow(self) -> None:
        """One pass of the feed: publish what is new, or, with no subscriber, skip it cheaply.

        With no subscriber, nobody would see the frames, so the feed reads no event rows: it
        moves `last_id` to the newest committed id (one indexed max() read) and is done. No
        later subscriber misses those changes: one with ?since= replays them from the database
        through its own read, and one without starts at `last_id` (it asked for new changes
        only; moving the cursor is what keeps it from being sent a backlog). The cursor must
        keep up rather than stay put, or the first subscriber's catch-up would read all that
        was committed while nobody listened.

        A subscriber that arrives while that read is under way may have begun its replay, or
        taken `last_id`, before the read's snapshot: jumping to its result could skip, for it,
        the changes committed in between. Then the result is dropped and the feed catches up
        from where it was (a backlog of one pass at most), as it does whenever someone listens.
        """
        if not self._subscribers:
            head = await self._read_head()
            if not self._subscribers:  # still nobody (and no await until the assignment)
                self.last_id = max(self.last_id, head)  # ids only ascend
                return
        await self.catch_up()

    async def catch_up(self) -> None:
        """Publish every committed change above `last_id`, in id order."""
        async for frames, last in pages_of_changes(self._read_after, self.last_id):
            self.publish(frames)
            self.last_id = last

    def stop(self) -> None:
        """End every subscription (sockets close with 1001) and the feed."""
        self._stopping = True
        self._wake.set()
        for sub in list(self._subscribers):
            self._end(sub, "shutdown")

    def _end(self, sub: Subscriber, reason: str) -> None:
        sub.reason = reason
        sub.ended.set()


def database_hub(reader: Reader, *, queue_size: int, poll_interval: float) -> LiveHub:
    """A hub fed from `status_events` through the repository."""

    async def read_after(after: int, limit: int) -> list[dict[str, Any]]:
        return await reader.run(functools.partial(repo.events_after, after=after, limit=limit))

    async def read_head() -> int:
        return await reader.run(repo.newest_event_id)

    return LiveHub(read_after, read_head, queue_size=queue_size, poll_interval=poll_interval)
