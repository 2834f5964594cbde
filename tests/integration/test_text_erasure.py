"""STORE_MESSAGE_TEXT=false in the projector's pass, on real SQLite and PostgreSQL: a final status
erases our message's text in the same transaction, after a resend took its copy; a status that
is not final keeps it while a resend could still need it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, select
from sqlalchemy.ext.asyncio import AsyncEngine

from plivo_tracker.db.engine import Writer, make_writer
from plivo_tracker.inbound.journal import append
from plivo_tracker.messages.models import messages
from plivo_tracker.messages.projector import project_pending
from plivo_tracker.outbound.repository import resender
from plivo_tracker.outbound.resend import ResendPolicy
from plivo_tracker.retention.rules import Erasure
from tests.conftest import callback_fields
from tests.integration.test_ingest import item
from tests.old_data import add_message, utcnow

RESEND = ResendPolicy(codes=frozenset({"80"}), max_attempts=3, base_delay=60.0)


@pytest.fixture
async def writer(engine: AsyncEngine) -> AsyncIterator[Writer]:
    w = make_writer(engine)
    yield w
    await w.close()


async def ours(engine: AsyncEngine) -> tuple[int, str]:
    """A message of ours that Plivo accepted (queued, outbox done), with its text."""

    def fill(conn: Connection) -> tuple[int, str]:
        message_id = add_message(conn, utcnow(), timedelta(minutes=1), "queued", events=0)
        uuid = conn.execute(select(messages.c.message_uuid).where(messages.c.id == message_id))
        return message_id, str(uuid.scalar_one())

    async with engine.begin() as conn:
        return await conn.run_sync(fill)


async def callback(
    writer: Writer, uuid: str, status: str, erasure: Erasure | None, **extra: str
) -> Any:
    """Journal the callback, then apply it: one projector pass."""
    fields = callback_fields(uuid, status, **extra)
    await writer.run(lambda conn: append(conn, [item(fields)], utcnow()))
    return await writer.run(
        lambda conn: project_pending(conn, utcnow(), resend=resender(RESEND), erasure=erasure)
    )


async def texts(engine: AsyncEngine) -> dict[int, tuple[Any, Any, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(
                messages.c.id,
                messages.c.text,
                messages.c.attempt_of,
                messages.c.content_erased_at,
            )
        )
        return {int(r[0]): (r[1], r[2], r[3]) for r in rows}


async def test_a_resend_takes_its_copy_before_the_original_forgets_it(
    engine: AsyncEngine, writer: Writer
) -> None:
    message_id, uuid = await ours(engine)
    erasure = Erasure(resends=True)
    await callback(writer, uuid, "sent", erasure, Sequence="2")
    assert (await texts(engine))[message_id][0] == "Your code is 482193"  # may still be resent
    result = await callback(writer, uuid, "undelivered", erasure, Sequence="3", ErrorCode="80")
    assert len(result.resent) == 1
    rows = await texts(engine)
    text, _, erased_at = rows[message_id]
    assert text is None
    assert erased_at is not None
    resend_text, attempt_of, resend_erased = rows[result.resent[0]]
    assert resend_text == "Your code is 482193"  # the resend still has to be sent
    assert attempt_of == message_id
    assert resend_erased is None


@pytest.mark.parametrize("final", ["delivered", "failed"])
async def test_a_final_status_erases_the_text(
    engine: AsyncEngine, writer: Writer, final: str
) -> None:
    message_id, uuid = await ours(engine)
    extra = {"ErrorCode": "30"} if final == "failed" else {}
    result = await callback(writer, uuid, final, Erasure(resends=True), Sequence="3", **extra)
    assert result.resent == []
    assert (await texts(engine))[message_id][0] is None


async def test_with_text_stored_nothing_is_erased(engine: AsyncEngine, writer: Writer) -> None:
    message_id, uuid = await ours(engine)
    await callback(writer, uuid, "delivered", None, Sequence="3")
    assert (await texts(engine))[message_id] == ("Your code is 482193", None, None)
