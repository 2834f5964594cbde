"""POST|GET /plivo/callback and /plivo/inbound: verify, parse, group commit, and answer 200
only after COMMIT.

Both routes are Plivo calling us, and both take the same path: the signature checked against
PUBLIC_BASE_URL + the route's own path, the fields read, one item appended to the journal by
the group committer (or spooled), 200 after that. They differ only in what the item is: a
status report (`/plivo/callback`, journal source "callback") or a message sent to one of our
numbers (`/plivo/inbound`, the Application's `message_url`, source "inbound"); `PLIVO_ROUTES`
maps one to the other.

The endpoint is plain ASGI in front of the FastAPI app (`CallbackEndpoint`): it is the hot path,
and FastAPI's middleware and routing layers cost more than all of our own work per callback
(measured in docs/benchmarks.md). FastAPI still documents the routes in OpenAPI through
`router`, whose handlers run the same `handle_plivo`.
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
from starlette.types import Receive, Scope, Send

from plivo_tracker import metrics
from plivo_tracker.config import Settings
from plivo_tracker.inbound.committer import CommitterClosed, StoreFailed
from plivo_tracker.inbound.items import make_item
from plivo_tracker.plivo import signature
from plivo_tracker.plivo.callback import parse_form
from plivo_tracker.plivo.inbound import KIND as INBOUND
from plivo_tracker.web.access import AccessGuard, client_address, host_allowed
from plivo_tracker.web.deps import Context
from plivo_tracker.web.envelope import error_body
from plivo_tracker.web.hygiene import API_CSP, InputGuard, SecurityHeaders, security_headers
from plivo_tracker.web.limits import (
    MAX_BODY,
    BodySizeLimit,
    length_too_big,
    read_limited,
)
from plivo_tracker.web.throttle import Throttle

log = structlog.get_logger(__name__)
router = APIRouter(tags=["plivo"])

CALLBACK_PATH = "/plivo/callback"
INBOUND_PATH = "/plivo/inbound"
# The routes Plivo calls → the journal source of what they carry.
PLIVO_ROUTES = {CALLBACK_PATH: "callback", INBOUND_PATH: INBOUND}
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


_FORBIDDEN = error_body("invalid_signature", "Plivo signature missing or invalid")
_UNAVAILABLE = error_body("unavailable", "cannot store the callback now; retry later")
_TOO_LARGE = error_body("payload_too_large", f"body exceeds {MAX_BODY} bytes")
_NOT_ALLOWED = error_body("method_not_allowed", "use POST or GET")
_INTERNAL = error_body("internal_error", "internal error")
_TOO_MANY = error_body("rate_limited", "too many callbacks that failed verification")
_BAD_HOST = error_body("host_not_allowed", "this server does not answer to that Host name")


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


async def handle_plivo(
    ctx: Context,
    path: str,
    method: str,
    raw_query: str,
    headers: dict[str, str],
    body: bytes,
    client: str,
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """Verify one request Plivo made to `path` (a key of PLIVO_ROUTES) and wait for its
    durable commit; returns (status, JSON body, extra headers).

    `headers` holds the request's headers with lower-case names (at least those in
    `_KEPT_HEADERS`); `client` is what the failure rate limit counts (web/throttle.py).
    """
    started = time.perf_counter()
    settings = ctx.settings
    source = PLIVO_ROUTES[path]
    # The URL Plivo called, rebuilt from configuration, never from Host / X-Forwarded-*.
    url = settings.public_base_url + path + ("?" + raw_query if raw_query else "")
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
        log.warning("callback.rejected", reason=verdict.scheme, method=method, path=path)
        # Counted only once verification failed: a genuine callback is never limited.
        wait = await ctx.throttle.hit("callback_failures", client)
        if wait is not None:
            return 429, _TOO_MANY, [(b"retry-after", str(wait).encode())]
        return 403, _FORBIDDEN, []

    # POST fields come in the body; GET fields (and a POST with an empty body) in the query.
    fields = form if form else (None if problem else parse_form(raw_query))
    item = make_item(
        received_at=datetime.now(UTC),
        method=method,
        path=path,
        query=raw_query,
        headers={k: v for k, v in headers.items() if k in _KEPT_HEADERS},
        body=body,
        fields=fields,
        # Genuine nonces have 20 digits; every nonce of the request is recorded (replays).
        nonce=verdict.nonce[: signature.NONCE_MAX] if verdict.nonce else None,
        nonces=verdict.nonces,
        scheme=verdict.scheme,
        reason=problem,
        source=source,
    )
    try:
        outcome = await ctx.committer.submit(item)
    except (CommitterClosed, StoreFailed) as exc:
        log.error("callback.not_stored", error=str(exc), path=path)
        return 503, _UNAVAILABLE, []
    metrics.ACK_SECONDS.observe(time.perf_counter() - started)
    return 200, _RESULT[outcome.value], []


class CallbackEndpoint:
    """The outermost ASGI app: serves the Plivo routes (/plivo/callback, /plivo/inbound) itself
    and hands everything else to the
    FastAPI app behind the security headers, the URL guard, the access rules and the body
    limit (web/)."""

    def __init__(self, app: FastAPI, settings: Settings, throttle: Throttle) -> None:
        self.app = app
        headers = security_headers(settings.public_base_url)
        # The size limit before the access rules: every oversize body is a 413, whatever else
        # is wrong with the request (it costs at most MAX_BODY bytes of reading).
        self._rest = SecurityHeaders(
            InputGuard(BodySizeLimit(AccessGuard(app, settings, throttle))), headers
        )
        self._hosts = settings.hosts
        # The callback's answers carry the same headers, built once (the hot path).
        self._headers = [(b"content-type", b"application/json"), *headers]
        self._headers.append((b"content-security-policy", API_CSP))

    @property
    def state(self) -> Any:
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in PLIVO_ROUTES:
            await self._rest(scope, receive, send)
            return
        method = scope["method"]
        if method not in ("POST", "GET"):
            await self._respond(send, 405, _NOT_ALLOWED)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if not host_allowed(headers.get("host"), self._hosts):
            await self._respond(send, 400, _BAD_HOST)
            return
        length = headers.get("content-length")
        if length is not None and length_too_big(length, MAX_BODY):
            await self._respond(send, 413, _TOO_LARGE)
            return
        body_follows = length is not None or "transfer-encoding" in headers
        body = await read_limited(receive, MAX_BODY) if body_follows else b""
        if body is None:
            await self._respond(send, 413, _TOO_LARGE)
            return
        try:
            status, payload, extra = await handle_plivo(
                self.app.state.ctx,
                scope["path"],
                method,
                scope["query_string"].decode("latin-1"),
                headers,
                body,
                client_address(scope),
            )
        except Exception:  # noqa: BLE001 - logged; the client never sees internals
            log.exception("callback.unhandled")
            status, payload, extra = 500, _INTERNAL, []
        await self._respond(send, status, payload, extra)

    async def _respond(
        self,
        send: Send,
        status: int,
        body: bytes,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        headers = [*self._headers, (b"content-length", str(len(body)).encode()), *(extra or [])]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


# OpenAPI documentation of the routes; requests normally reach CallbackEndpoint first.
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
    client = "addr:" + (request.client.host if request.client else "unknown")
    status, payload, extra = await handle_plivo(
        request.app.state.ctx,
        request.url.path,
        request.method,
        request.url.query,
        headers,
        body,
        client,
    )
    response = Response(payload, status_code=status, media_type="application/json")
    for name, value in extra:
        response.headers[name.decode()] = value.decode()
    return response  # security headers: the outer layers


@router.post(CALLBACK_PATH, summary="Plivo status callback (form, multipart or JSON)", **_DOC)
async def callback_post(request: Request) -> Response:
    return await _via_fastapi(request)


@router.get(CALLBACK_PATH, summary="Plivo status callback with method=GET (query)", **_DOC)
async def callback_get(request: Request) -> Response:
    return await _via_fastapi(request)


@router.post(
    INBOUND_PATH,
    summary="Plivo inbound SMS/MMS to our numbers (the Application's message_url)",
    **_DOC,
)
async def inbound_post(request: Request) -> Response:
    return await _via_fastapi(request)


@router.get(INBOUND_PATH, summary="Plivo inbound SMS/MMS with message_method=GET (query)", **_DOC)
async def inbound_get(request: Request) -> Response:
    return await _via_fastapi(request)
