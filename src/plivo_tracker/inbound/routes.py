"""POST|GET /plivo/callback: verify, parse, group commit, and answer 200 only after COMMIT.

The endpoint is plain ASGI in front of the FastAPI app (`CallbackEndpoint`): it is the hot path,
and FastAPI's middleware and routing layers cost more than all of our own work per callback
(measured in docs/benchmarks.md). FastAPI still documents the route in OpenAPI through `router`,
whose handlers run the same `handle_callback`.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import FormData, Headers
from starlette.formparsers import MultiPartParser
from starlette.types import Message, Receive, Scope, Send

from plivo_tracker import metrics
from plivo_tracker.inbound.committer import CommitterClosed, StoreFailed
from plivo_tracker.inbound.ingest import make_item
from plivo_tracker.plivo import signature
from plivo_tracker.plivo.callback import parse_form
from plivo_tracker.web.deps import Context
from plivo_tracker.web.hygiene import NOSNIFF, InputGuard, SecurityHeaders
from plivo_tracker.web.limits import MAX_BODY

log = structlog.get_logger(__name__)
router = APIRouter(tags=["plivo"])

CALLBACK_PATH = "/plivo/callback"
# Headers kept with every event: the signature evidence and how the body was sent.
_KEPT_HEADERS = frozenset(
    {
        signature.V2,
        signature.MA_V2,
        signature.V2_NONCE,
        signature.V3,
        signature.MA_V3,
        signature.V3_NONCE,
        "content-type",
        "user-agent",
    }
)
_RESULT = {
    o: json.dumps({"result": o}).encode() for o in ("stored", "duplicate", "replay", "quarantined")
}


def _error(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


_FORBIDDEN = _error("invalid_signature", "Plivo signature missing or invalid")
_UNAVAILABLE = _error("unavailable", "cannot store the callback now; retry later")
_TOO_LARGE = _error("payload_too_large", f"body exceeds {MAX_BODY} bytes")
_NOT_ALLOWED = _error("method_not_allowed", "use POST or GET")
_INTERNAL = _error("internal_error", "internal error")


async def _multipart(content_type: str, body: bytes) -> FormData:
    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    return await MultiPartParser(Headers({"content-type": content_type}), stream()).parse()


async def read_fields(
    content_type: str, body: bytes
) -> tuple[dict[str, list[str]] | None, str | None]:
    """The POST body as fields, or (None, reason) when it cannot be read as fields."""
    if not body:
        return {}, None
    ctype = content_type.split(";")[0].strip().lower()
    try:
        if ctype == "application/json":
            obj = json.loads(body)
            if not isinstance(obj, dict):
                return None, "JSON body is not an object"
            return signature.fields_from_json(obj), None
        if ctype == "multipart/form-data":
            form = await _multipart(content_type, body)
            fields: dict[str, list[str]] = {}
            for key, value in form.multi_items():
                if isinstance(value, str):  # file parts are not callback fields
                    fields.setdefault(key, []).append(value)
            await form.close()
            return fields, None
        return parse_form(body.decode("utf-8")), None
    except Exception as exc:  # noqa: BLE001 - any parse failure: keep the body raw
        return None, f"body not readable as {ctype or 'form'}: {type(exc).__name__}"


async def handle_callback(
    ctx: Context, method: str, raw_query: str, headers: dict[str, str], body: bytes
) -> tuple[int, bytes]:
    """Verify one callback and wait for its durable commit; returns (status, JSON body).

    `headers` holds the request's headers with lower-case names (at least those in
    `_KEPT_HEADERS`).
    """
    started = time.perf_counter()
    settings = ctx.settings
    # The URL Plivo called, rebuilt from configuration, never from Host / X-Forwarded-*.
    url = settings.public_base_url + CALLBACK_PATH + ("?" + raw_query if raw_query else "")
    if method == "POST":
        form, problem = await read_fields(headers.get("content-type", ""), body)
    else:
        form, problem = {}, None
    verdict = signature.verify(
        method,
        url,
        headers,
        form,
        settings.account_tokens,
        settings.main_tokens,
        v3_only=settings.plivo_signature == "v3",
    )
    if not verdict.ok:
        metrics.SIGNATURE_FAILURES.labels(reason=verdict.scheme).inc()
        log.warning("callback.rejected", reason=verdict.scheme, method=method)
        return 403, _FORBIDDEN

    # POST fields come in the body; GET fields (and a POST with an empty body) in the query.
    fields = form if form else (None if problem else parse_form(raw_query))
    item = make_item(
        received_at=datetime.now(UTC),
        method=method,
        path=CALLBACK_PATH,
        query=raw_query,
        headers={k: v for k, v in headers.items() if k in _KEPT_HEADERS},
        body=body,
        fields=fields,
        # Genuine nonces have 20 digits; every nonce of the request is recorded (replays).
        nonce=verdict.nonce[: signature.NONCE_MAX] if verdict.nonce else None,
        nonces=verdict.nonces,
        scheme=verdict.scheme,
        reason=problem,
    )
    try:
        outcome = await ctx.committer.submit(item)
    except (CommitterClosed, StoreFailed) as exc:
        log.error("callback.not_stored", error=str(exc))
        return 503, _UNAVAILABLE
    metrics.ACK_SECONDS.observe(time.perf_counter() - started)
    return 200, _RESULT[outcome.value]


async def _read_body(receive: Receive) -> bytes | None:
    """The whole body, or None when it exceeds MAX_BODY (or the client left)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _respond(send: Send, status: int, body: bytes) -> None:
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            NOSNIFF,
        ],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body})


class CallbackEndpoint:
    """ASGI wrapper: serves /plivo/callback itself and hands everything else to the app,
    behind the URL guard and the security headers (web/hygiene.py)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._rest = SecurityHeaders(InputGuard(app))

    @property
    def state(self) -> Any:
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != CALLBACK_PATH:
            await self._rest(scope, receive, send)
            return
        method = scope["method"]
        if method not in ("POST", "GET"):
            await _respond(send, 405, _NOT_ALLOWED)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        length = headers.get("content-length")
        # isascii(): "²" is a digit to isdigit() but not to int(), which raised out of the app.
        if length is not None and (
            not (length.isascii() and length.isdigit()) or int(length) > MAX_BODY
        ):
            await _respond(send, 413, _TOO_LARGE)
            return
        body = await _read_body(receive) if method == "POST" else b""
        if body is None:
            await _respond(send, 413, _TOO_LARGE)
            return
        try:
            status, payload = await handle_callback(
                self.app.state.ctx, method, scope["query_string"].decode("latin-1"), headers, body
            )
        except Exception:  # noqa: BLE001 - logged; the client never sees internals
            log.exception("callback.unhandled")
            status, payload = 500, _INTERNAL
        await _respond(send, status, payload)


# OpenAPI documentation of the route; requests normally reach CallbackEndpoint first.
_DOC: dict[str, Any] = {
    "response_class": JSONResponse,
    "responses": {
        403: {"description": "signature missing or invalid"},
        413: {"description": "body over 64 KiB"},
        503: {"description": "neither the database nor the spool can take it: Plivo retries"},
    },
}


async def _via_fastapi(request: Request) -> Response:
    headers = {k.lower(): v for k, v in request.headers.items()}
    body = await request.body() if request.method == "POST" else b""
    status, payload = await handle_callback(
        request.app.state.ctx, request.method, request.url.query, headers, body
    )
    return Response(payload, status_code=status, media_type="application/json")  # nosniff: outer


@router.post(CALLBACK_PATH, summary="Plivo status callback (form, multipart or JSON)", **_DOC)
async def callback_post(request: Request) -> Response:
    return await _via_fastapi(request)


@router.get(CALLBACK_PATH, summary="Plivo status callback with method=GET (query)", **_DOC)
async def callback_get(request: Request) -> Response:
    return await _via_fastapi(request)
