"""GET /api/conversations (the newest message of each remote number, cursor pages) and
GET /api/conversations/{number} (one thread, inbound and outbound, cursor pages)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from plivo_tracker.conversations import repository as repo
from plivo_tracker.messages.phone import InvalidNumber, to_e164
from plivo_tracker.messages.schemas import build_summary
from plivo_tracker.web.deps import ContextDep
from plivo_tracker.web.errors import InvalidParameter

router = APIRouter(prefix="/api", tags=["conversations"])  # keys: web/access.py

# Ids are 64-bit: at most 18 digits, like GET /api/messages' cursor (more failed the query).
Cursor = Annotated[
    str | None,
    Query(max_length=18, pattern=r"^[0-9]{1,18}$", description="next_cursor of the previous page"),
]
Limit = Annotated[int, Query(ge=1, le=200)]


def message_json(row: dict[str, Any]) -> dict[str, Any]:
    """The message list's summary of a message, with its media URLs (MMS) as stored."""
    data = build_summary(row).model_dump_public()
    raw = row.get("media_urls")
    try:
        urls = json.loads(raw) if raw else []
    except ValueError:
        urls = []
    data["media_urls"] = [u for u in urls if isinstance(u, str)] if isinstance(urls, list) else []
    return data


def _ends(row: dict[str, Any]) -> tuple[str, str | None]:
    """(remote number, our number) of a message."""
    if row.get("direction") == "inbound":
        return row["from_number"], row["to_number"]
    return row["to_number"], row["from_number"]


def _number(raw: str) -> str:
    text = raw.strip()
    if not text.lstrip("+").isdigit() or not text.isascii():
        raise InvalidParameter(
            "number must be an E.164 phone number (+ and digits)", parameter="number"
        )
    try:
        return to_e164(text)
    except InvalidNumber as exc:
        raise InvalidParameter(f"not a valid phone number: {exc}", parameter="number") from None


@router.get(
    "/conversations",
    summary="Conversations: the newest message of each remote number, newest first",
)
async def list_conversations(
    ctx: ContextDep, limit: Limit = 50, cursor: Cursor = None
) -> dict[str, Any]:
    async with ctx.engine.connect() as conn:
        rows = await repo.latest_per_number(
            conn, before_id=int(cursor) if cursor else None, limit=limit + 1
        )
        page = rows[:limit]
        optouts = await repo.opted_out(conn, [_ends(r)[0] for r in page])
    items = []
    for row in page:
        number, ours = _ends(row)
        items.append(
            {
                "number": number,
                "our_number": ours,
                "last_message": message_json(row),
                "opted_out": optouts.get(number, False),
            }
        )
    more = len(rows) > limit
    return {"conversations": items, "next_cursor": str(page[-1]["id"]) if more else None}


@router.get(
    "/conversations/{number}",
    summary="One conversation: the messages to and from a number, oldest first in each page",
)
async def read_conversation(
    ctx: ContextDep,
    number: Annotated[str, Path(max_length=32, description="E.164 (a URL-encoded + or none)")],
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, Any]:
    e164 = _number(number)
    async with ctx.engine.connect() as conn:
        rows = await repo.thread(
            conn, e164, before_id=int(cursor) if cursor else None, limit=limit + 1
        )
        optouts = await repo.opted_out(conn, [e164])
    page = rows[:limit]
    more = len(rows) > limit
    ours = next((_ends(r)[1] for r in page if _ends(r)[1]), None)
    return {
        "number": e164,
        "our_number": ours,
        "opted_out": optouts[e164],
        # The newest page first; within a page, oldest first (a chat reads down to the newest).
        "messages": [message_json(r) for r in reversed(page)],
        "next_cursor": str(page[-1]["id"]) if more else None,
    }
