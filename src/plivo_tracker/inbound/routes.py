"""POST|GET /plivo/callback: verify, parse, group commit, and answer 200 only after COMMIT."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from urllib.parse import parse_qs

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from plivo_tracker import metrics
from plivo_tracker.inbound.committer import CommitterClosed, StoreFailed
from plivo_tracker.inbound.ingest import make_item
from plivo_tracker.plivo import signature
from plivo_tracker.web.deps import Context
from plivo_tracker.web.errors import error_response

log = structlog.get_logger(__name__)
router = APIRouter(tags=["plivo"])

CALLBACK_PATH = "/plivo/callback"
# Headers kept with every event: the signature evidence and how the body was sent.
_KEPT_HEADERS = (
    signature.V2,
    signature.MA_V2,
    signature.V2_NONCE,
    signature.V3,
    signature.MA_V3,
    signature.V3_NONCE,
    "content-type",
    "user-agent",
)
_OK = {
    outcome: f'{{"result":"{outcome}"}}'.encode()
    for outcome in ("stored", "duplicate", "replay", "quarantined")
}


async def _read_fields(
    request: Request, body: bytes
) -> tuple[dict[str, list[str]] | None, str | None]:
    """The POST body as fields, or (None, reason) when it cannot be read as fields."""
    if not body:
        return {}, None
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if ctype == "application/json":
            obj = json.loads(body)
            if not isinstance(obj, dict):
                return None, "JSON body is not an object"
            return signature.fields_from_json(obj), None
        if ctype == "multipart/form-data":
            fields: dict[str, list[str]] = {}
            async with request.form() as form:
                for key, value in form.multi_items():
                    if isinstance(value, str):  # file parts are not callback fields
                        fields.setdefault(key, []).append(value)
            return fields, None
        return parse_qs(body.decode("utf-8"), keep_blank_values=True), None
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"body not readable as {ctype or 'form'}: {type(exc).__name__}"


async def _handle(request: Request) -> Response:
    started = time.perf_counter()
    ctx: Context = request.app.state.ctx
    settings = ctx.settings
    method = request.method
    body = await request.body() if method == "POST" else b""
    raw_query = request.scope["query_string"].decode("latin-1")
    # The URL Plivo called, rebuilt from configuration, never from Host / X-Forwarded-*.
    url = settings.public_base_url + CALLBACK_PATH + ("?" + raw_query if raw_query else "")
    headers = {k: v for k in _KEPT_HEADERS if (v := request.headers.get(k)) is not None}

    form, problem = await _read_fields(request, body) if method == "POST" else ({}, None)
    verdict = signature.verify(
        method, url, headers, form, settings.account_tokens, settings.main_tokens
    )
    if not verdict.ok:
        metrics.SIGNATURE_FAILURES.labels(reason=verdict.scheme).inc()
        log.warning("callback.rejected", reason=verdict.scheme, method=method)
        return error_response(403, "invalid_signature", "Plivo signature missing or invalid")

    # POST fields come in the body; GET fields (and a POST with an empty body) in the query.
    fields = form if form else (None if problem else parse_qs(raw_query, keep_blank_values=True))
    item = make_item(
        received_at=datetime.now(UTC),
        method=method,
        path=CALLBACK_PATH,
        query=raw_query,
        headers=headers,
        body=body,
        fields=fields,
        nonce=verdict.nonce[:128] if verdict.nonce else None,  # genuine nonces have 20 digits
        scheme=verdict.scheme,
        reason=problem,
    )
    try:
        outcome = await ctx.committer.submit(item)
    except (CommitterClosed, StoreFailed) as exc:
        log.error("callback.not_stored", error=str(exc))
        return error_response(503, "unavailable", "cannot store the callback now; retry later")
    metrics.ACK_SECONDS.observe(time.perf_counter() - started)
    return Response(_OK[outcome.value], media_type="application/json")


@router.post(
    CALLBACK_PATH,
    summary="Plivo status callback (form, multipart or JSON body)",
    response_class=JSONResponse,
    responses={403: {"description": "signature missing or invalid"}, 503: {"description": "retry"}},
)
async def callback_post(request: Request) -> Response:
    return await _handle(request)


@router.get(
    CALLBACK_PATH,
    summary="Plivo status callback sent with method=GET (fields in the query)",
    response_class=JSONResponse,
    responses={403: {"description": "signature missing or invalid"}, 503: {"description": "retry"}},
)
async def callback_get(request: Request) -> Response:
    return await _handle(request)
