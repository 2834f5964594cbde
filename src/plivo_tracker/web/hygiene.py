"""Hostile input in, safe output out: text rules, the URL guard, safe JSON, security headers.

Every route that takes text gets the same rules, so that no input can reach the database or a
response encoder in a shape that makes it fail (a 500 instead of a 4xx):

- `text_problem` (pure, in messages/phone.py) names what is wrong with a string: NUL and other
  control characters (PostgreSQL refuses NUL in text; Plivo and phones have no use for them)
  and lone surrogates (valid in a JSON escape, not encodable as UTF-8). `CleanText` and
  `CleanLine` apply it to request fields.
- `InputGuard` refuses a path or query string that is not valid UTF-8 or carries NUL or a lone
  surrogate once percent-decoded (400, or close 4400 on /ws) before any route parses it. Plivo's
  own routes are left to their handler: an authentic callback is kept raw, never refused.
- `SafeJSONResponse` never fails to encode: a lone surrogate that a message echoes is replaced
  by U+FFFD.
- `SecurityHeaders` adds `X-Content-Type-Options: nosniff` to every HTTP response, and turns an
  exception that escaped the app (already logged by the error handler) into nothing more: the
  server's own "Exception in ASGI application" never fires.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import unquote_to_bytes

import structlog
from pydantic import AfterValidator
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from plivo_tracker.messages.phone import text_problem
from plivo_tracker.web.envelope import encode, error_body

log = structlog.get_logger(__name__)

NOSNIFF = (b"x-content-type-options", b"nosniff")
PLIVO_PREFIX = "/plivo/"


def _clean_text(value: str) -> str:
    problem = text_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _clean_line(value: str) -> str:
    problem = text_problem(value, multiline=False)
    if problem:
        raise ValueError(problem)
    return value


# Pydantic field types: the error message says what is wrong, never repeats the value.
CleanText = Annotated[str, AfterValidator(_clean_text)]
CleanLine = Annotated[str, AfterValidator(_clean_line)]


def url_problem(raw: bytes) -> str | None:
    """Why a raw path or query string is unacceptable, or None (pure)."""
    decoded = unquote_to_bytes(raw.replace(b"+", b" "))
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        return "is not valid UTF-8 once percent-decoded"
    if "\x00" in text:
        return "contains NUL"
    return None


class SafeJSONResponse(JSONResponse):
    """JSONResponse that can encode anything json can serialise (the default response class)."""

    def render(self, content: Any) -> bytes:
        return encode(content)


async def send_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """A complete `{"error": {...}}` response in plain ASGI (before or around the app)."""
    body = error_body(code, message)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                NOSNIFF,
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class InputGuard:
    """Refuse URLs that no route could handle safely, before routing (plain ASGI)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"].startswith(PLIVO_PREFIX):
            await self.app(scope, receive, send)
            return
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
        for part, raw in (("path", raw_path), ("query string", scope.get("query_string", b""))):
            problem = url_problem(raw)
            if problem is None:
                continue
            if scope["type"] == "websocket":
                await receive()  # websocket.connect
                await send({"type": "websocket.accept"})
                await send({"type": "websocket.close", "code": 4400, "reason": f"{part} {problem}"})
                return
            await send_error(send, 400, "invalid_encoding", f"the {part} {problem}")
            return
        await self.app(scope, receive, send)


# A JSON answer is never a page: it may load nothing and be framed by nobody.
API_CSP = b"default-src 'none'; frame-ancestors 'none'"
# FastAPI's Swagger UI page loads its bundle from jsdelivr and starts it with an inline script.
DOCS_CSP = (
    b"default-src 'none'; script-src 'self' https://cdn.jsdelivr.net 'unsafe-inline'; "
    b"style-src https://cdn.jsdelivr.net 'unsafe-inline'; img-src 'self' data: "
    b"https://fastapi.tiangolo.com; connect-src 'self'; frame-ancestors 'none'"
)


def security_headers(public_base_url: str) -> list[tuple[bytes, bytes]]:
    """Headers every response carries (pure). HSTS only when the public URL is https: a
    browser that saw it over plain http would ignore it anyway, and on loopback it would pin
    a developer's localhost to https."""
    headers = [
        NOSNIFF,
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
    ]
    if public_base_url.startswith("https://"):
        headers.append((b"strict-transport-security", b"max-age=31536000"))
    return headers


class SecurityHeaders:
    """Security headers on every HTTP response (a page's own CSP wins; JSON gets the strict
    one); an escaped exception ends here, answered or logged."""

    def __init__(self, app: ASGIApp, headers: list[tuple[bytes, bytes]]) -> None:
        self.app = app
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        csp = DOCS_CSP if scope["path"] == "/docs" else API_CSP

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in self.headers if h[0] not in present)
                if b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", csp))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:  # noqa: BLE001 - the client gets JSON, the log gets the trace
            if started:
                # The error handler has answered 500 and logged the traceback; a response
                # that failed half-way is worth a line too.
                log.warning("http.failed_after_response", path=scope.get("path"), error=repr(exc))
                return
            log.error("http.unhandled", path=scope.get("path"), exc_info=exc)
            extra = [h for h in self.headers if h != NOSNIFF]
            await send_error(send, 500, "internal_error", "internal error", extra)
