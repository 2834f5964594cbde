"""Database errors never carry bound parameters (message texts, phone numbers, payloads): their
text is what gets logged (`error=repr(exc)`), on SQLite and on PostgreSQL, through the async
engine as well as through the batch writer and the live feed's reader."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, insert, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from plivo_tracker.db.engine import make_reader, make_writer
from plivo_tracker.messages.models import messages

NUMBER = "+14155550101"
TEXT = "Your one-time code is 981-443, do not share it"
SECRETS = ("4155550101", "4155550100", TEXT, "981-443")
MISSING_TABLE = text("SELECT to_number FROM no_such_table WHERE to_number = :to AND body = :body")


def _row(**overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    row: dict[str, Any] = {
        "message_uuid": "3a9e4b52-6c1d-11ef-9f0e-0242ac120003",
        "origin": "api",
        "status": "queued",
        "to_number": NUMBER,
        "from_number": "14155550100",
        "text": TEXT,
        "created_at": now,
        "updated_at": now,
    }
    row.update(overrides)
    return row


def _assert_no_parameters(exc: DBAPIError) -> None:
    assert "[SQL parameters hidden due to hide_parameters=True]" in str(exc)
    for rendered in (str(exc), repr(exc)):
        for secret in SECRETS:
            assert secret not in rendered, rendered


async def test_failing_statements_carry_no_parameters(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(messages), _row())
    for params in (_row(), _row(message_uuid=None, origin=None)):  # duplicate; NOT NULL
        with pytest.raises(DBAPIError) as caught:
            async with engine.begin() as conn:
                await conn.execute(insert(messages), params)
        _assert_no_parameters(caught.value)
    with pytest.raises(DBAPIError) as caught:
        async with engine.connect() as conn:
            await conn.execute(MISSING_TABLE, {"to": NUMBER, "body": TEXT})
    _assert_no_parameters(caught.value)


async def test_writer_and_reader_errors_carry_no_parameters(engine: AsyncEngine) -> None:
    def write(conn: Connection) -> None:
        conn.execute(insert(messages), [_row(), _row()])  # the second one is a duplicate

    def read(conn: Connection) -> None:
        conn.execute(MISSING_TABLE, {"to": NUMBER, "body": TEXT})

    writer = make_writer(engine)
    reader = make_reader(engine)
    try:
        with pytest.raises(DBAPIError) as caught:
            await writer.run(write)
        _assert_no_parameters(caught.value)
        with pytest.raises(DBAPIError) as caught:
            await reader.run(read)
        _assert_no_parameters(caught.value)
    finally:
        await writer.close()
        await reader.close()
