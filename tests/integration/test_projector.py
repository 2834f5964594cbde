"""The projector on real SQLite and PostgreSQL: the result never depends on how the journal is
cut into passes (a hypothesis property), a row the database refuses is set aside instead of
holding every later report back, and the cursor moves only with what it applied."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from sqlalchemy import Connection, select
from sqlalchemy.ext.asyncio import AsyncEngine

from plivo_tracker.db.engine import Writer, make_reader, make_writer
from plivo_tracker.inbound import repository as journal_repo
from plivo_tracker.inbound.items import CallbackItem, Outcome, make_item
from plivo_tracker.inbound.journal import append
from plivo_tracker.messages import local_changes
from plivo_tracker.messages.local_changes import LocalChange
from plivo_tracker.messages.models import message_parts, messages, quarantine, status_events
from plivo_tracker.messages.projector import Projector, project_pending
from plivo_tracker.messages.status import MessageStatus
from tests.conftest import callback_fields, callback_item, new_nonce, new_uuid, set_poison
from tests.integration.test_ingest import our_message, queued
from tests.integration.test_stats_rollup import assert_rollups_match

STATUSES = ("queued", "sent", "delivered", "undelivered", "failed")

# One report: (message 0-2, part 0-2 (0: the message itself), status, Sequence or None, code)
reports = st.lists(
    st.tuples(
        st.integers(0, 2),
        st.integers(0, 2),
        st.sampled_from(STATUSES),
        st.one_of(st.none(), st.integers(1, 9)),
        st.sampled_from(("", "30", "80")),
    ),
    min_size=1,
    max_size=25,
)


@pytest.fixture
async def writer(engine: AsyncEngine) -> AsyncIterator[Writer]:
    w = make_writer(engine)
    yield w
    await w.close()


def _fields(names: dict[str, str], report: tuple[int, int, str, int | None, str]) -> dict[str, str]:
    message, part, status, sequence, code = report
    parent = names[f"m{message}"]
    extra = {"ErrorCode": code if status in ("undelivered", "failed") else ""}
    if sequence is not None:
        extra["Sequence"] = str(sequence)
    if part == 0:
        return callback_fields(parent, status, **extra)
    uuid = names[f"m{message}p{part}"]
    return callback_fields(uuid, status, ParentMessageUUID=parent, PartInfo=f"{part} of 2", **extra)


async def _journal(writer: Writer, rows: Sequence[dict[str, str]]) -> None:
    items = [callback_item(f) for f in rows]
    now = datetime.now(UTC)
    for item in items:  # one report per append: the journal's order is the list's
        await writer.run(lambda conn, it=item: append(conn, [it], now))


async def _project_in(writer: Writer, cuts: Sequence[int]) -> None:
    for size in cuts:
        await writer.run(lambda conn, n=size: project_pending(conn, datetime.now(UTC), limit=n))
    while (await writer.run(lambda conn: project_pending(conn, datetime.now(UTC)))).applied:
        pass


async def _state(engine: AsyncEngine, names: dict[str, str]) -> dict[str, Any]:
    """Everything the projection decided for these messages, with their UUIDs as names."""
    alias = {uuid: name for name, uuid in names.items()}
    m, p, e = messages, message_parts, status_events
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(
                    m.c.id,
                    m.c.message_uuid,
                    m.c.status,
                    m.c.status_sequence,
                    m.c.error_code,
                    m.c.has_conflict,
                    m.c.part_count,
                ).where(m.c.message_uuid.in_(list(alias)))
            )
        ).all()
        ids = {r[0]: alias[r[1]] for r in rows}
        parts = (
            await conn.execute(
                select(p.c.part_uuid, p.c.status, p.c.status_sequence, p.c.error_code).where(
                    p.c.message_id.in_(list(ids))
                )
            )
        ).all()
        events = (
            await conn.execute(
                select(
                    e.c.message_id,
                    e.c.message_uuid,
                    e.c.effect,
                    e.c.previous_status,
                    e.c.message_status,
                )
                .where(e.c.message_id.in_(list(ids)))
                .order_by(e.c.id)
            )
        ).all()
    return {
        "messages": sorted((alias[r[1]], *r[2:]) for r in rows),
        "parts": sorted((alias[r[0]], *r[1:]) for r in parts),
        "events": [(ids[r[0]], alias[r[1]], *r[2:]) for r in events],
    }


def _names() -> dict[str, str]:
    return {f"m{i}{s}": new_uuid() for i in range(3) for s in ("", "p1", "p2")}


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batch=reports, cuts=st.lists(st.integers(1, 6), max_size=8))
async def test_the_result_does_not_depend_on_how_the_journal_is_cut(
    engine: AsyncEngine, writer: Writer, batch: list[Any], cuts: list[int]
) -> None:
    """The same reports, journaled in the same order under fresh UUIDs, applied once in one
    pass and once in passes of the given sizes, leave the same messages, parts and events."""
    whole, pieces = _names(), _names()
    await _journal(writer, [_fields(whole, r) for r in batch])
    await _project_in(writer, [])
    await _journal(writer, [_fields(pieces, r) for r in batch])
    await _project_in(writer, cuts)
    assert await _state(engine, pieces) == await _state(engine, whole)
    await assert_rollups_match(engine)  # what every pass noted equals a count over the rows


async def _poison(engine: AsyncEngine, uuid: str, on: bool) -> None:
    """A real database fault: inserting an event of `uuid` raises."""
    await set_poison(engine, "status_events", "message_uuid", uuid, on)


async def test_a_row_the_database_refuses_is_set_aside_not_blocking(
    engine: AsyncEngine, writer: Writer
) -> None:
    good = [new_uuid() for _ in range(6)]
    bad = new_uuid()
    fields = [callback_fields(u, "delivered") for u in good[:3]]
    fields += [callback_fields(bad, "delivered")]
    fields += [callback_fields(u, "delivered") for u in good[3:]]
    await _journal(writer, fields)
    reader = make_reader(engine)
    projector = Projector(writer, reader)
    await _poison(engine, bad, on=True)
    before = _set_aside_counts()
    try:
        assert await projector.drain() == 7
    finally:
        await _poison(engine, bad, on=False)
        await reader.close()
    assert _set_aside_counts() == (before[0] + 1, before[1])  # a status report: a callback
    async with engine.connect() as conn:
        statuses = dict(
            (await conn.execute(select(messages.c.message_uuid, messages.c.status))).all()
        )
        kept = (await conn.execute(select(quarantine.c.reason, quarantine.c.body))).all()
        cursor, head = await conn.run_sync(journal_repo.projection_state)
    assert {u: statuses.get(u) for u in good} == dict.fromkeys(good, "delivered")
    assert bad not in statuses  # its placeholder went with the failed pass
    assert len(kept) == 1
    assert "poison" in kept[0][0]
    assert bad.encode() in kept[0][1]  # the report itself, as received
    assert cursor == head


def _set_aside_counts() -> tuple[float, float]:
    """/metrics: journal rows set aside, (status callbacks, inbound messages)."""
    labels = {"outcome": "set_aside"}
    return (
        REGISTRY.get_sample_value("plivo_tracker_callbacks_total", labels) or 0.0,
        REGISTRY.get_sample_value("plivo_tracker_inbound_messages_total", labels) or 0.0,
    )


async def test_an_inbound_message_set_aside_is_counted_as_inbound(
    engine: AsyncEngine, writer: Writer
) -> None:
    bad, good = new_uuid(), new_uuid()
    now = datetime.now(UTC)
    for uuid in (bad, good):
        item = _inbound_item(uuid, now)
        await writer.run(lambda conn, it=item: append(conn, [it], now))
    reader = make_reader(engine)
    projector = Projector(writer, reader)
    await set_poison(engine, "messages", "message_uuid", bad, on=True)
    before = _set_aside_counts()
    try:
        assert await projector.drain() == 2
    finally:
        await set_poison(engine, "messages", "message_uuid", bad, on=False)
        await reader.close()
    assert _set_aside_counts() == (before[0], before[1] + 1)
    async with engine.connect() as conn:
        kept = (await conn.execute(select(quarantine.c.body))).scalars().all()
        stored = (await conn.execute(select(messages.c.message_uuid))).scalars().all()
    assert stored == [good]
    assert len(kept) == 1
    assert bad.encode() in kept[0]


async def test_the_cursor_moves_only_with_what_was_applied(
    engine: AsyncEngine, writer: Writer
) -> None:
    uuid = new_uuid()
    await _journal(writer, [callback_fields(uuid, "sent"), callback_fields(uuid, "delivered")])

    def fail_after_projecting(conn: Connection) -> None:
        assert project_pending(conn, datetime.now(UTC)).applied == 2
        raise RuntimeError("crash before COMMIT")

    with pytest.raises(RuntimeError):
        await writer.run(fail_after_projecting)
    async with engine.connect() as conn:
        assert await conn.run_sync(journal_repo.projection_state) == (0, 2)
        assert (await conn.execute(select(status_events.c.id))).all() == []
    assert (await writer.run(lambda conn: project_pending(conn, datetime.now(UTC)))).applied == 2
    async with engine.connect() as conn:
        status = (
            await conn.execute(select(messages.c.status).where(messages.c.message_uuid == uuid))
        ).scalar_one()
    assert status == "delivered"


async def test_a_duplicate_report_is_refused_by_the_journal(writer: Writer) -> None:
    fields = callback_fields(new_uuid(), "delivered", Sequence="3")
    now = datetime.now(UTC)
    first = await writer.run(lambda conn: append(conn, [callback_item(fields)], now))
    again = await writer.run(lambda conn: append(conn, [callback_item(fields)], now))
    assert (first, again) == ([Outcome.STORED], [Outcome.DUPLICATE])


# ---- our own changes, callbacks and inbound messages together: statuses and statistics ------

# One step of a message's life, journaled in this order: ("send", k) stores message k of ours
# (the API's birth), ("accepted", k) records Plivo's 202 with its UUID, ("failed", k) a refusal,
# ("report", k, status) a callback for k's UUID (possibly before the 202: a placeholder),
# ("inbound", k) a message to us.
steps = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, 3)),
        st.tuples(st.just("accepted"), st.integers(0, 3)),
        st.tuples(st.just("failed"), st.integers(0, 3)),
        st.tuples(st.just("report"), st.integers(0, 3), st.sampled_from(STATUSES)),
        st.tuples(st.just("inbound"), st.integers(0, 3)),
    ),
    min_size=1,
    max_size=20,
)


async def _live_of(writer: Writer, life: Sequence[tuple[Any, ...]]) -> None:
    """Journal `life` as the API, the dispatcher, Plivo and a sender would."""
    ours: dict[int, int] = {}  # k → local id
    uuids = {k: new_uuid() for k in range(4)}
    now = datetime.now(UTC)
    for step in life:
        kind, k = step[0], step[1]
        if kind == "send":
            ours[k] = await writer.run(lambda conn: our_message(conn, now))
        elif kind in ("accepted", "failed") and k in ours:
            change = queued(ours[k], uuids[k]) if kind == "accepted" else _failed(ours[k])
            await writer.run(lambda conn, c=change: local_changes.journal(conn, [c], now))
        elif kind == "report":
            await _journal(writer, [callback_fields(uuids[k], step[2])])
        elif kind == "inbound":
            item = _inbound_item(new_uuid(), now)
            await writer.run(lambda conn, it=item: append(conn, [it], now))


def _inbound_item(uuid: str, now: datetime) -> CallbackItem:
    """A verified inbound SMS as /plivo/inbound hands it to the group committer."""
    fields = {"From": "447700900123", "To": "14155550100", "Text": "hi", "Type": "sms"}
    item = make_item(
        received_at=now,
        method="POST",
        path="/plivo/inbound",
        query="",
        headers={},
        body=b"",
        fields={k: [v] for k, v in {**fields, "MessageUUID": uuid}.items()},
        nonce=new_nonce(),
        scheme="v3",
        source="inbound",
    )
    assert item.event is not None
    return item


def _failed(local: int) -> LocalChange:
    return LocalChange(
        local, MessageStatus.FAILED, frozenset({MessageStatus.ACCEPTED}), error_detail="400"
    )


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(life=steps, cuts=st.lists(st.integers(1, 6), max_size=8))
async def test_statistics_follow_every_change_the_projector_makes(
    engine: AsyncEngine, writer: Writer, life: list[Any], cuts: list[int]
) -> None:
    """Sends, 202s, refusals, callbacks before and after the 202 (placeholders merged away) and
    inbound messages, applied in random passes: the rollups always equal a count over the
    messages, and every UUID we adopted belongs to one message."""
    await _live_of(writer, life)
    await _project_in(writer, cuts)
    await assert_rollups_match(engine)
    async with engine.connect() as conn:
        held = (
            await conn.execute(
                select(messages.c.message_uuid).where(messages.c.message_uuid.is_not(None))
            )
        ).scalars()
        uuids = list(held)
    assert len(uuids) == len(set(uuids))
