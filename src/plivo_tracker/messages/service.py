"""Read-side use cases shared by the HTTP API and the CLI."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from plivo_tracker.messages import repository as repo
from plivo_tracker.messages.schemas import Message, build_message


async def get_message(engine: AsyncEngine, ref: str) -> Message | None:
    """A message with its parts and full event timeline, by local id or MessageUUID."""
    async with engine.connect() as conn:
        row = await repo.find_message(conn, ref.strip())
        if row is None:
            return None
        parts = await repo.message_parts_of(conn, row["id"])
        events = await repo.message_events(conn, row["id"])
    return build_message(row, parts, events)
