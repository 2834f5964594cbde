"""POST /api/messages: validate, write the outbox in one transaction, 202. Never calls Plivo."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header
from fastapi.responses import JSONResponse

from plivo_tracker.messages.phone import text_info
from plivo_tracker.outbound.outbox import (
    IdempotencyConflict,
    InvalidRequest,
    SendRequest,
    request_hash,
    submit,
    validate,
)
from plivo_tracker.web.auth import require_api_key
from plivo_tracker.web.deps import ContextDep
from plivo_tracker.web.errors import error_response

router = APIRouter(prefix="/api", tags=["messages"], dependencies=[Depends(require_api_key)])


@router.post(
    "/messages/validate",
    summary="Check a send without sending: normalised recipients, encoding, segments, problems",
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


@router.post(
    "/messages",
    status_code=202,
    summary="Send an SMS/MMS to one or more recipients (queued in the outbox)",
    responses={
        409: {"description": "Idempotency-Key reused with another body"},
        422: {"description": "invalid recipients or content; every problem is listed"},
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
    key = (idempotency_key, request_hash(body)) if idempotency_key else None
    now = datetime.now(UTC)
    try:
        response = await ctx.writer.run(lambda conn: submit(conn, valid, now, key))
    except IdempotencyConflict:
        return error_response(
            409, "idempotency_conflict", "this Idempotency-Key was used with a different body"
        )
    if ctx.dispatcher is not None:
        ctx.dispatcher.wake()
    return JSONResponse(response, status_code=202)
