"""POST /api/messages: validate, write the outbox in one transaction, 202. Never calls Plivo.

Also the operator's side of sending: resolving a message whose outcome is `unknown`
(docs/adr/0008) and pausing or resuming dispatching for every worker.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection

from plivo_tracker.messages import phone
from plivo_tracker.optouts import repository as optout_repo
from plivo_tracker.outbound import repository as out_repo
from plivo_tracker.outbound.outbox import (
    IdempotencyConflict,
    InvalidRequest,
    OptedOut,
    SendRequest,
    checks_opt_outs,
    request_hash,
    submit,
    validate,
)
from plivo_tracker.plivo.encoding import text_info
from plivo_tracker.retention.content import erase_unneeded
from plivo_tracker.web.deps import ContextDep
from plivo_tracker.web.errors import error_response
from plivo_tracker.web.hygiene import CleanLine

router = APIRouter(prefix="/api", tags=["messages"])  # keys: web/access.py


@router.post(
    "/messages/validate",
    summary="Check a send without sending: normalised recipients, encoding, segments, problems "
    "(opted-out recipients among them, with `reason: opted_out`)",
)
async def validate_send(body: SendRequest, ctx: ContextDep) -> dict[str, Any]:
    info = text_info(body.text) if body.text else None
    out: dict[str, Any] = {
        "valid": True,
        "recipients": [],
        "encoding": info.encoding if info else None,
        "segments": info.segments if info else None,
        "problems": [],
    }
    try:
        out["recipients"] = validate(body, ctx.settings.plivo_src or ctx.default_src).recipients
    except InvalidRequest as exc:
        out["valid"] = False
        out["problems"] = [p.as_dict() for p in exc.problems]
        return out
    exemption = ctx.settings.opt_out_transactional_exemption
    if checks_opt_outs(body.transactional, exemption):
        async with ctx.engine.connect() as conn:
            refused = await conn.run_sync(optout_repo.opted_out_among, out["recipients"])
        if refused:
            out["valid"] = False
            out["problems"] = _opted_out_problems(body, sorted(refused))
    return out


@router.post(
    "/messages",
    status_code=202,
    summary="Send an SMS/MMS to one or more recipients (queued in the outbox)",
    responses={
        409: {"description": "Idempotency-Key reused with another body"},
        422: {
            "description": "invalid recipients or content (`invalid_request`), or recipients "
            "who opted out (`opted_out`: each one listed with `reason: opted_out`; nothing is "
            "stored, for any recipient); every problem is listed"
        },
    },
)
async def send_messages(
    body: SendRequest,
    ctx: ContextDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=200,
            pattern=r"^[\x20-\x7e]+$",
            description="any printable ASCII string up to 200 characters",
        ),
    ] = None,
) -> Any:
    try:
        valid = validate(body, ctx.settings.plivo_src or ctx.default_src)
    except InvalidRequest as exc:
        problems = [p.as_dict() for p in exc.problems]
        return error_response(422, "invalid_request", str(exc), problems=problems)
    digest = request_hash(body, with_content=ctx.settings.store_message_text)
    key = (idempotency_key, digest) if idempotency_key else None
    now = datetime.now(UTC)
    exemption = ctx.settings.opt_out_transactional_exemption
    try:
        response = await ctx.writer.run(
            lambda conn: submit(conn, valid, now, key, opt_out_exemption=exemption)
        )
    except IdempotencyConflict:
        return error_response(
            409, "idempotency_conflict", "this Idempotency-Key was used with a different body"
        )
    except OptedOut as exc:
        problems = _opted_out_problems(body, exc.numbers)
        return error_response(
            422,
            "opted_out",
            f"{len(exc.numbers)} recipient(s) opted out; nothing was sent: "
            + ", ".join(exc.numbers),
            problems=problems,
        )
    if ctx.dispatcher is not None:
        ctx.dispatcher.wake()
    return JSONResponse(response, status_code=202)


def _opted_out_problems(body: SendRequest, numbers: list[str]) -> list[dict[str, Any]]:
    """One problem per opted-out recipient, at its index in the request's `to`, like the
    problems of invalid numbers."""
    refused = set(numbers)
    raw = [body.to] if isinstance(body.to, str) else list(body.to)
    problems: list[dict[str, Any]] = []
    for index, given in enumerate(raw):
        try:
            number = phone.to_e164(given)
        except phone.InvalidNumber:
            continue
        if number in refused:
            refused.discard(number)  # a number given twice is named once
            problems.append(
                {
                    "field": "to",
                    "index": index,
                    "value": given,
                    "number": number,
                    "reason": "opted_out",
                    "message": "opted out: this recipient asked not to receive messages",
                }
            )
    return problems


class Resolve(BaseModel):
    """How an operator settles a message whose send outcome is `unknown`."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["adopt", "resend"] = Field(
        description="adopt: Plivo has it (give its MessageUUID); resend: Plivo has nothing"
    )
    message_uuid: CleanLine | None = Field(default=None, min_length=1, max_length=64)


@router.post(
    "/messages/{message_id}/resolve",
    summary="Settle a message whose outcome is unknown: adopt a MessageUUID, or resend",
    responses={
        404: {"description": "no such message of ours"},
        409: {"description": "not unknown, or the UUID belongs to another message"},
    },
)
async def resolve(
    message_id: Annotated[int, Path(ge=1, le=2**62)], body: Resolve, ctx: ContextDep
) -> Any:
    if body.action == "adopt" and not body.message_uuid:
        return error_response(422, "invalid_request", "adopt needs message_uuid")
    now = datetime.now(UTC)
    try:
        if body.action == "adopt":
            assert body.message_uuid is not None
            uuid, erasure = body.message_uuid, ctx.settings.erasure

            def adopt(conn: Connection) -> None:
                out_repo.resolve_adopt(conn, message_id, uuid, now)
                erase_unneeded(conn, [message_id], now, erasure)

            await ctx.writer.run(adopt)
        else:
            await ctx.writer.run(lambda conn: out_repo.resolve_resend(conn, message_id, now))
    except out_repo.ResolveError as exc:
        status = 404 if exc.code == "not_found" else 409
        return error_response(status, exc.code, str(exc))
    if ctx.dispatcher is not None:
        ctx.dispatcher.wake()
    return {"id": message_id, "resolved": body.action}


class Pause(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: CleanLine = Field(default="paused by an operator", max_length=300)


@router.get("/dispatch", summary="Whether dispatching is paused, why, and since when")
async def dispatch_status(ctx: ContextDep) -> dict[str, Any]:
    state = await ctx.writer.run(out_repo.pause_state)
    return state.as_dict()


@router.post("/dispatch/pause", summary="Pause dispatching for every worker (until resumed)")
async def dispatch_pause(body: Pause, ctx: ContextDep) -> dict[str, Any]:
    now = datetime.now(UTC)
    await ctx.writer.run(
        lambda conn: out_repo.set_paused(
            conn, by="operator", reason=body.reason, now=now, next_probe_at=None
        )
    )
    return (await ctx.writer.run(out_repo.pause_state)).as_dict()


@router.post("/dispatch/resume", summary="Resume dispatching (an operator's or automatic pause)")
async def dispatch_resume(ctx: ContextDep) -> dict[str, Any]:
    now = datetime.now(UTC)
    await ctx.writer.run(lambda conn: out_repo.resume(conn, now))
    if ctx.dispatcher is not None:
        ctx.dispatcher.wake()
    return (await ctx.writer.run(out_repo.pause_state)).as_dict()
