"""apply_keyword on SQLite and PostgreSQL, in the caller's transaction, as the projector calls it
for each inbound message: STOP opts the sender out, START back in, HELP is recorded and answered
only when HELP_TEXT is set; the same message twice, or a second STOP, changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from plivo_tracker.config import Settings
from plivo_tracker.db.engine import Writer, make_writer
from plivo_tracker.messages.models import messages, outbox
from plivo_tracker.messages.writes import begin_status_writes
from plivo_tracker.optouts import repository as repo
from plivo_tracker.optouts.models import opt_out_events, opt_outs

REMOTE = "+14155550142"
OURS = "+14155550100"


@pytest.fixture
async def writer(engine: AsyncEngine) -> AsyncIterator[Writer]:
    w = make_writer(engine)
    yield w
    await w.close()


def _inbound(conn: Connection, text: str, sender: str = REMOTE) -> int:
    """An inbound message row as the inbound flow stores it (the contract's columns)."""
    now = datetime.now(UTC)
    row = {
        "origin": "inbound",
        "direction": "inbound",
        "status": "received",
        "from_number": sender,
        "to_number": OURS,
        "text": text,
        "type": "sms",
        "has_conflict": False,
        "created_at": now,
        "updated_at": now,
    }
    return int(conn.execute(messages.insert().returning(messages.c.id), [row]).scalar_one())


def _receive(settings: Settings, text: str, sender: str = REMOTE) -> Callable[[Connection], Any]:
    """What the projector does for one new inbound message: store it, apply its keyword."""

    def work(conn: Connection) -> tuple[int, str | None]:
        begin_status_writes(conn)
        message_id = _inbound(conn, text, sender)
        action = repo.apply_keyword(
            conn,
            number=sender,
            our_number=OURS,
            message_id=message_id,
            text=text,
            now=datetime.now(UTC),
            settings=settings,
        )
        return message_id, action

    return work


def _again(settings: Settings, message_id: int, text: str) -> Callable[[Connection], Any]:
    def work(conn: Connection) -> str | None:
        begin_status_writes(conn)
        return repo.apply_keyword(
            conn,
            number=REMOTE,
            our_number=OURS,
            message_id=message_id,
            text=text,
            now=datetime.now(UTC),
            settings=settings,
        )

    return work


async def _table(engine: AsyncEngine, table: Any) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        order = table.c.id if "id" in table.c else table.c.number
        return [dict(r) for r in (await conn.execute(select(table).order_by(order))).mappings()]


async def test_stop_opts_out_and_start_opts_back_in(
    settings: Settings, writer: Writer, engine: AsyncEngine
) -> None:
    stop_id, action = await writer.run(_receive(settings, "  Stop "))
    assert action == "opt_out"
    [row] = await _table(engine, opt_outs)
    assert (row["number"], row["source"], row["keyword"], row["message_id"]) == (
        REMOTE,
        "keyword",
        "STOP",
        stop_id,
    )
    assert await writer.run(lambda c: repo.opted_out_among(c, [REMOTE, OURS])) == {REMOTE}

    start_id, action = await writer.run(_receive(settings, "start"))
    assert action == "opt_in"
    assert await _table(engine, opt_outs) == []
    events = await _table(engine, opt_out_events)
    assert [(e["action"], e["message_id"], e["keyword"]) for e in events] == [
        ("opt_out", stop_id, "STOP"),
        ("opt_in", start_id, "START"),
    ]
    assert await writer.run(lambda c: repo.opted_out_among(c, [REMOTE])) == set()


async def test_a_second_stop_and_the_same_message_twice_change_nothing(
    settings: Settings, writer: Writer, engine: AsyncEngine
) -> None:
    first, _ = await writer.run(_receive(settings, "STOP"))
    second, action = await writer.run(_receive(settings, "unsubscribe"))
    assert action == "opt_out"  # still what it asks for ...
    assert await writer.run(_again(settings, first, "STOP")) == "opt_out"
    [row] = await _table(engine, opt_outs)
    assert row["message_id"] == first  # ... but the first STOP stays the cause
    assert [e["message_id"] for e in await _table(engine, opt_out_events)] == [first]
    # A START from before that is applied again after a later STOP changes nothing either.
    start, _ = await writer.run(_receive(settings, "START"))
    await writer.run(_receive(settings, "STOP"))
    assert await writer.run(_again(settings, start, "START")) == "opt_in"
    assert len(await _table(engine, opt_outs)) == 1
    assert second not in [e["message_id"] for e in await _table(engine, opt_out_events)]


async def test_help_is_recorded_and_answered_only_with_a_help_text(
    make_settings: Callable[..., Settings], db_url: str, writer: Writer, engine: AsyncEngine
) -> None:
    silent = make_settings(database_url=db_url)
    asked, action = await writer.run(_receive(silent, "help"))
    assert action == "help"
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(outbox))).scalar_one() == 0
    [event] = await _table(engine, opt_out_events)
    assert (event["action"], event["message_id"], event["note"]) == (
        "help",
        asked,
        "no HELP_TEXT set",
    )

    text = "Acme alerts: reply STOP to opt out. Help: acme.example/help"
    answering = make_settings(database_url=db_url, help_text=text)
    asked, _ = await writer.run(_receive(answering, "INFO"))
    await writer.run(_again(answering, asked, "INFO"))  # applied twice: answered once
    async with engine.connect() as conn:
        replies = (
            (await conn.execute(select(messages).where(messages.c.direction == "outbound")))
            .mappings()
            .all()
        )
        queued = (await conn.execute(select(outbox.c.message_id, outbox.c.state))).all()
    [reply] = replies
    assert (reply["to_number"], reply["from_number"], reply["text"]) == (REMOTE, OURS, text)
    assert (reply["status"], reply["origin"], reply["segments"]) == ("accepted", "api", 1)
    assert queued == [(reply["id"], "pending")]
    events = await _table(engine, opt_out_events)
    assert events[-1]["note"] == f"answered with message {reply['id']}"
    assert await _table(engine, opt_outs) == []  # HELP changes no opt-out


async def test_help_is_answered_to_an_opted_out_number_too(
    make_settings: Callable[..., Settings], db_url: str, writer: Writer, engine: AsyncEngine
) -> None:
    settings = make_settings(database_url=db_url, help_text="Acme: reply START to resubscribe")
    await writer.run(_receive(settings, "STOP"))
    await writer.run(_receive(settings, "HELP"))
    async with engine.connect() as conn:
        n = (await conn.execute(select(func.count()).select_from(outbox))).scalar_one()
    assert n == 1
    assert len(await _table(engine, opt_outs)) == 1


async def test_other_texts_change_nothing(
    settings: Settings, writer: Writer, engine: AsyncEngine
) -> None:
    for text in ("stop texting me please", "Yes please, 3pm works", "", "STOP IT"):
        _, action = await writer.run(_receive(settings, text))
        assert action is None
    assert (
        await writer.run(
            lambda c: repo.apply_keyword(
                c,
                number=REMOTE,
                our_number=OURS,
                message_id=999,
                text=None,
                now=datetime.now(UTC),
                settings=settings,
            )
        )
        is None
    )
    assert await _table(engine, opt_outs) == []
    assert await _table(engine, opt_out_events) == []


async def test_plivo_digits_are_stored_in_e164(
    settings: Settings, writer: Writer, engine: AsyncEngine
) -> None:
    await writer.run(_receive(settings, "QUIT", sender="14155550143"))
    assert [r["number"] for r in await _table(engine, opt_outs)] == ["+14155550143"]


async def test_the_change_is_part_of_the_callers_transaction(
    settings: Settings, writer: Writer, engine: AsyncEngine
) -> None:
    """A projector pass that fails after applying a STOP leaves no opt-out behind (its next
    pass applies the message again, then for good)."""

    class Failed(Exception):
        pass

    def fails(conn: Connection) -> None:
        _receive(settings, "STOP")(conn)
        raise Failed

    with pytest.raises(Failed):
        await writer.run(fails)
    assert await _table(engine, opt_outs) == []
    assert await _table(engine, opt_out_events) == []
