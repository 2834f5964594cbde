"""GET /api/opt-outs (cursor pages), GET/PUT/DELETE /api/opt-outs/{number}.

Behind the same access rules as every /api route (web/access.py: API keys, rate limits, and
`Content-Type: application/json` plus a same-site Origin on PUT and DELETE). Numbers in paths
are E.164 ("+14155550101", or URL-encoded "%2B14155550101"); digits with their country code
are read the same way; anything else is a 422.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Body, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection

from plivo_tracker.messages import phone
from plivo_tracker.optouts import repository as repo
from plivo_tracker.optouts.repository import Change
from plivo_tracker.web.deps import ContextDep
from plivo_tracker.web.errors import InvalidParameter
from plivo_tracker.web.hygiene import CleanText

router = APIRouter(prefix="/api", tags=["opt-outs"])  # keys: web/access.py

NumberPath = Annotated[
    str,
    Path(
        max_length=64,
        description='E.164 number ("+" URL-encoded as %2B, or digits with the country code)',
    ),
]


class OptOut(BaseModel):
    """A number that has opted out."""

    number: str
    opted_out_at: datetime
    source: str = Field(description="keyword | api | cli | import")
    keyword: str | None = Field(description="the keyword that opted it out (source keyword)")
    message_id: int | None = Field(description="the inbound message that said it")
    note: str | None = None


class OptOutEvent(BaseModel):
    """One change of a number's opt-out, or a HELP it sent."""

    id: int
    action: str = Field(description="opt_out | opt_in | help")
    source: str = Field(description="keyword | api | cli | import")
    message_id: int | None = Field(description="the inbound message that caused it")
    keyword: str | None
    note: str | None
    at: datetime


class OptOutState(BaseModel):
    """Whether a number has opted out (also when it has not), with its history."""

    number: str
    opted_out: bool
    opted_out_at: datetime | None = None
    source: str | None = None
    keyword: str | None = None
    message_id: int | None = None
    note: str | None = None
    history: list[OptOutEvent] = Field(description="every change, oldest first")


class OptOutPage(BaseModel):
    opt_outs: list[OptOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: last")


class OptOutBody(BaseModel):
    """Body of PUT /api/opt-outs/{number} (optional)."""

    model_config = ConfigDict(extra="forbid")

    note: CleanText | None = Field(default=None, max_length=500)


def _e164(number: str) -> str:
    try:
        return phone.to_e164(number)
    except phone.InvalidNumber as exc:
        raise InvalidParameter(
            f"not a valid E.164 number ({exc}): {number!r}", parameter="number"
        ) from None


def _state(conn: Connection, number: str) -> OptOutState:
    row = repo.get(conn, number)
    events = [OptOutEvent(**e) for e in repo.history(conn, number)]
    if row is None:
        return OptOutState(number=number, opted_out=False, history=events)
    return OptOutState(opted_out=True, history=events, **row)


@router.get("/opt-outs", summary="Numbers that opted out, in number order, with cursor pages")
async def list_opt_outs(
    ctx: ContextDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[
        str | None, Query(max_length=64, pattern=r"^\+?[0-9]{1,20}$", description="next_cursor")
    ] = None,
) -> OptOutPage:
    async with ctx.engine.connect() as conn:
        rows = await conn.run_sync(repo.page, cursor, limit + 1)
    items = [OptOut(**r) for r in rows[:limit]]
    more = len(rows) > limit
    return OptOutPage(opt_outs=items, next_cursor=items[-1].number if more else None)


@router.get(
    "/opt-outs/{number}",
    summary="Whether a number has opted out, and its history (200 also when it has not)",
    responses={422: {"description": "not a valid E.164 number"}},
)
async def read_opt_out(number: NumberPath, ctx: ContextDep) -> OptOutState:
    e164 = _e164(number)
    async with ctx.engine.connect() as conn:
        return await conn.run_sync(_state, e164)


@router.put(
    "/opt-outs/{number}",
    summary="Opt a number out (sends to it are refused); harmless when it has already",
    responses={422: {"description": "not a valid E.164 number"}},
)
async def put_opt_out(
    number: NumberPath,
    ctx: ContextDep,
    body: Annotated[OptOutBody | None, Body()] = None,
) -> OptOutState:
    e164 = _e164(number)
    note = body.note if body is not None else None
    change = Change("api", datetime.now(UTC), note=note)

    def work(conn: Connection) -> OptOutState:
        repo.opt_out(conn, e164, change)
        return _state(conn, e164)

    return await ctx.writer.run(work)


@router.delete(
    "/opt-outs/{number}",
    summary="Opt a number back in; harmless when it had not opted out",
    responses={422: {"description": "not a valid E.164 number"}},
)
async def delete_opt_out(number: NumberPath, ctx: ContextDep) -> OptOutState:
    e164 = _e164(number)
    change = Change("api", datetime.now(UTC))

    def work(conn: Connection) -> OptOutState:
        repo.opt_in(conn, e164, change)
        return _state(conn, e164)

    return await ctx.writer.run(work)
