"""GET /api/messages (filters, cursor pagination) and GET /api/messages/{id} (one message with
its status, error meaning, parts and timeline)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query

from plivo_tracker.messages.repository import MessageQuery
from plivo_tracker.messages.service import BadWindow, compute_stats, get_message, list_messages
from plivo_tracker.messages.status import MessageStatus
from plivo_tracker.web.deps import ContextDep
from plivo_tracker.web.errors import InvalidParameter, NotFound

router = APIRouter(prefix="/api", tags=["messages"])  # keys: web/access.py


def _statuses(raw: str | None) -> tuple[str, ...]:
    if not raw:
        return ()
    wanted = tuple(dict.fromkeys(s.strip().lower() for s in raw.split(",") if s.strip()))
    known = {s.value for s in MessageStatus}
    unknown = [s for s in wanted if s not in known]
    if unknown:
        raise InvalidParameter(
            f"unknown status {', '.join(unknown)}; known: {', '.join(sorted(known))}",
            parameter="status",
        )
    return wanted


def _spellings(number: str | None, parameter: str) -> tuple[str, ...]:
    """A number as we store it: E.164 for what we sent, Plivo's digits for callback-only ones."""
    if not number:
        return ()
    digits = "".join(ch for ch in number if ch.isdigit())
    if not digits:
        raise InvalidParameter(f"not a phone number: {number!r}", parameter=parameter)
    return (f"+{digits}", digits)


def _utc(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise InvalidParameter(
            f"{name} needs a time zone (e.g. 2026-11-23T10:00:00Z)", parameter=name
        )
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # Its offset moves it out of years 1..9999 in UTC (9999-12-31T23:59:59-23:59): the
        # database could not compare it (a 500 before).
        raise InvalidParameter(f"{name} is out of range", parameter=name) from None


@router.get("/messages", summary="Messages, newest first, with filters and cursor pagination")
async def list_recent(
    ctx: ContextDep,
    status: Annotated[str | None, Query(description="comma-separated statuses")] = None,
    to: Annotated[str | None, Query(max_length=32)] = None,
    from_: Annotated[str | None, Query(alias="from", max_length=32)] = None,
    number: Annotated[
        str | None,
        Query(
            max_length=32,
            description="the other party: the recipient of ours, the sender of inbound ones",
        ),
    ] = None,
    since: Annotated[datetime | None, Query(description="created at or after (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="created before (ISO 8601)")] = None,
    q: Annotated[str | None, Query(max_length=200, description="text or UUID contains")] = None,
    direction: Annotated[
        Literal["inbound", "outbound"] | None,
        Query(description="inbound: messages sent to our numbers; outbound: ours"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    # At most 18 digits like `ids`: ids are 64-bit, and a larger number failed the query (500).
    cursor: Annotated[str | None, Query(max_length=18, pattern=r"^[0-9]{1,18}$")] = None,
    ids: Annotated[
        str | None,
        Query(
            max_length=4000,
            pattern=r"^[0-9]{1,18}(,[0-9]{1,18}){0,199}$",
            description="only these local ids, comma-separated (at most 200); ids that do not "
            "exist (any more) are simply absent",
        ),
    ] = None,
) -> dict[str, Any]:
    query = MessageQuery(
        statuses=_statuses(status),
        to=_spellings(to, "to"),
        from_=_spellings(from_, "from"),
        number=_spellings(number, "number"),
        since=_utc(since, "since"),
        until=_utc(until, "until"),
        text=q.strip() if q and q.strip() else None,
        before_id=int(cursor) if cursor else None,
        ids=tuple(sorted({int(i) for i in ids.split(",")})) if ids else (),
        direction=direction,
    )
    page, next_id = await list_messages(ctx.engine, query, limit)
    return {
        "messages": [m.model_dump_public() for m in page],
        "next_cursor": str(next_id) if next_id is not None else None,
    }


@router.get("/messages/{ref}", summary="A message by local id or Plivo MessageUUID")
async def read_message(
    ctx: ContextDep,
    ref: str = Path(description="local id (digits) or Plivo MessageUUID", max_length=64),
) -> dict[str, Any]:
    message = await get_message(ctx.engine, ref)
    if message is None:
        raise NotFound(f"no message with id or MessageUUID {ref!r}")
    return message.model_dump_public()


@router.get("/stats", summary="Delivery statistics of the messages created in a window")
async def read_stats(
    ctx: ContextDep,
    window: Annotated[str, Query(max_length=8, description="15m, 1h, 24h, 7d … (max 90d)")] = "24h",
) -> dict[str, Any]:
    try:
        return await ctx.stats_cache.get(
            window, lambda: compute_stats(ctx.engine, window, datetime.now(UTC))
        )
    except BadWindow as exc:
        raise InvalidParameter(str(exc), parameter="window") from exc
