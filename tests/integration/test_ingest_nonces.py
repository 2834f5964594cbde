"""Every nonce of a request, in the journal append on real SQLite and PostgreSQL: any one committed
before (or earlier in the batch) makes a replay, all are recorded, and only on commit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, Engine, event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from plivo_tracker.db.engine import Writer, make_writer
from plivo_tracker.inbound.items import CallbackItem, Outcome
from plivo_tracker.inbound.journal import append
from plivo_tracker.messages import repository as repo
from plivo_tracker.messages.models import journal
from tests.conftest import callback_fields, callback_item, new_nonce, new_uuid


def item(nonces: tuple[str, ...], fields: dict[str, str] | None = None) -> CallbackItem:
    return callback_item(fields or callback_fields(new_uuid(), "sent"), nonces=nonces)


@pytest.fixture
async def writer(engine: AsyncEngine) -> AsyncIterator[Writer]:
    w = make_writer(engine)
    yield w
    await w.close()


async def run(writer: Writer, items: list[CallbackItem]) -> list[Outcome]:
    now = datetime.now(UTC)
    return await writer.run(lambda conn: append(conn, items, now))


async def stored(engine: AsyncEngine, nonces: list[str]) -> set[str]:
    async with engine.connect() as conn:
        return await repo.nonces_stored(conn, nonces)


async def events(engine: AsyncEngine) -> int:
    """Reports in the journal."""
    async with engine.connect() as conn:
        return len((await conn.execute(select(journal.c.id))).all())


async def test_any_committed_nonce_makes_a_replay_and_all_are_recorded(
    engine: AsyncEngine, writer: Writer
) -> None:
    a, b, c, d = (new_nonce() for _ in range(4))
    fields = callback_fields(new_uuid(), "delivered", Sequence="3")
    assert await run(writer, [item((a, b), fields)]) == [Outcome.STORED]
    assert await stored(engine, [a, b]) == {a, b}
    # Stripped to either nonce, or mixed with a new one, over any body: a replay.
    other = callback_fields(new_uuid(), "sent")
    got = await run(writer, [item((a,), fields), item((b,), other), item((c, b), other)])
    assert got == [Outcome.REPLAY] * 3
    assert await stored(engine, [c]) == {c}  # a replay's new nonce is recorded too
    assert await events(engine) == 1
    assert await run(writer, [item((d,), other)]) == [Outcome.STORED]


async def test_a_nonce_shared_with_an_earlier_item_of_the_batch_is_a_replay(
    engine: AsyncEngine, writer: Writer
) -> None:
    a, b, c = (new_nonce() for _ in range(3))
    first, second, third = (callback_fields(new_uuid(), "sent") for _ in range(3))
    got = await run(writer, [item((a, b), first), item((b, c), second), item((c,), third)])
    assert got == [Outcome.STORED, Outcome.REPLAY, Outcome.REPLAY]
    assert await stored(engine, [a, b, c]) == {a, b, c}
    assert await events(engine) == 1


async def test_nonces_recorded_only_on_commit(engine: AsyncEngine, writer: Writer) -> None:
    """A batch that does not commit (the request got 503) leaves no nonce: the retry is new."""
    a, b = new_nonce(), new_nonce()
    it = item((a, b))

    def fail_after_ingest(conn: Connection) -> None:
        append(conn, [it], datetime.now(UTC))
        raise RuntimeError("commit failed")

    with pytest.raises(RuntimeError):
        await writer.run(fail_after_ingest)
    assert await stored(engine, [a, b]) == set()
    assert await run(writer, [it]) == [Outcome.STORED]
    assert await stored(engine, [a, b]) == {a, b}


async def test_all_nonces_go_in_one_insert(engine: AsyncEngine, writer: Writer) -> None:
    """The extra nonces ride in the same multi-row INSERT: no extra round trip per batch."""
    inserts: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "callback_nonces" in statement and statement.lstrip().upper().startswith("INSERT"):
            inserts.append(statement)

    items = [item((new_nonce(), new_nonce())) for _ in range(20)]
    # On the Engine class: the SQLite writer has an engine of its own.
    event.listen(Engine, "before_cursor_execute", count)
    try:
        assert await run(writer, items) == [Outcome.STORED] * 20
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    assert len(inserts) == 1
    assert await stored(engine, [n for i in items for n in i.nonces]) == {
        n for i in items for n in i.nonces
    }
