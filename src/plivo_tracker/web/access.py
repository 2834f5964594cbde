"""Who may call what, in one plain-ASGI layer in front of the FastAPI app (docs/security.md).

In order, for every request but Plivo's callbacks (which carry their own proof, a signature):

1. the `Host` header must name this server (`ALLOWED_HOSTS`): a page on another site whose DNS
   name was re-pointed at this server (DNS rebinding) is same-origin to the browser, but still
   sends its own host name;
2. on the protected paths (/api/*, and /docs, /openapi.json, /metrics unless
   `PUBLIC_ENDPOINTS` opens them): an address that has used up its failed-authentication
   budget gets 429 before its key is looked at; then the key (when `API_KEYS` is set), 401
   and one more failure counted when it is wrong; then the request rate per key and per
   address (429 with `Retry-After`);
3. a state-changing request (POST, PUT, PATCH, DELETE) must say `Content-Type:
   application/json` (415) — a cross-site form or a "simple" fetch cannot, without a
   preflight we never grant — and, when a browser sends `Origin`, come from this server's own
   origin (403);
4. a WebSocket connect on /ws counts against its address's connect budget (close 4429); its key
   and Origin are checked by the stream itself (live/routes.py), which may read the key from a
   first frame.

The rules are pure functions below; the class only applies them.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from plivo_tracker import metrics
from plivo_tracker.config import Settings
from plivo_tracker.web.envelope import error_frame
from plivo_tracker.web.hygiene import send_error
from plivo_tracker.web.throttle import Throttle, key_identity

CLOSE_RATE_LIMITED = 4429
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LIVE_PATH = "/ws"
_DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json"})


# --- the rules (pure) ---------------------------------------------------------------------


def host_name(host_header: str | None) -> str | None:
    """The host name of a Host header, lower case, without port or brackets; None if absent."""
    if not host_header:
        return None
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:8000
        end = host.find("]")
        return host[1:end] if end > 0 else None
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".") or None


def host_allowed(host_header: str | None, hosts: frozenset[str] | None) -> bool:
    """Whether a request's Host header names this server (`hosts` None: any host)."""
    if hosts is None:
        return True
    name = host_name(host_header)
    return name is not None and name in hosts


def key_matches(given: str | None, keys: list[str]) -> bool:
    """Constant-time: every configured key is compared, whatever matched first."""
    if given is None:
        return False
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(given.encode(), key.encode())
    return ok


def key_from_headers(headers: Headers) -> str | None:
    """The key a client sent: `X-API-Key: KEY` or `Authorization: Bearer KEY`."""
    given = headers.get("x-api-key")
    if given is None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token:
            given = token.strip()
    return given


def same_origin(origin: str | None, host_header: str | None, public_base_url: str) -> bool:
    """Whether a browser's `Origin` is this server's own: the host it called (scheme aside,
    which a TLS proxy hides from us) or the public URL's origin. No Origin: not a browser's
    cross-site request (browsers always send it on cross-origin writes and WebSockets)."""
    if origin is None:
        return True
    parts = urlsplit(origin.strip().lower())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False  # "null" (sandboxed frames, file://), or garbage
    if host_header and parts.netloc == host_header.strip().lower():
        return True
    public = urlsplit(public_base_url.lower())
    return (parts.scheme, parts.netloc) == (public.scheme, public.netloc)


def is_json(content_type: str | None) -> bool:
    """`application/json`, with or without parameters (charset)."""
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


def protected(path: str, public_endpoints: frozenset[str]) -> bool:
    """Whether a path is behind API keys and the API rate limit."""
    if path == "/api" or path.startswith("/api/"):
        return True
    if path in _DOCS_PATHS:
        return "docs" not in public_endpoints
    if path == "/metrics":
        return "metrics" not in public_endpoints
    return False


def client_address(scope: Scope) -> str:
    """The client's address (the proxy's X-Forwarded-For when uvicorn trusts the proxy)."""
    client = scope.get("client")
    return "addr:" + (client[0] if client else "unknown")


# --- the layer ------------------------------------------------------------------------------


class AccessGuard:
    def __init__(self, app: ASGIApp, settings: Settings, throttle: Throttle) -> None:
        self.app = app
        self.throttle = throttle
        self.hosts = settings.hosts
        self.keys = settings.api_keys
        self.public_endpoints = frozenset(settings.public_endpoints)
        self.public_base_url = settings.public_base_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if not host_allowed(headers.get("host"), self.hosts):
            metrics.REFUSED.labels(reason="host").inc()
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})  # handshake → 403
                return
            await send_error(
                send, 400, "host_not_allowed", "this server does not answer to that Host name"
            )
            return
        if scope["type"] == "websocket":
            if scope["path"] == LIVE_PATH:
                wait = await self.throttle.hit("ws_connect", client_address(scope))
                if wait is not None:
                    await _close_rate_limited(receive, send, wait)
                    return
            await self.app(scope, receive, send)
            return
        refusal = await self._refusal(scope, headers)
        if refusal is not None:
            status, code, message, extra = refusal
            await send_error(send, status, code, message, extra)
            return
        await self.app(scope, receive, send)

    async def _refusal(
        self, scope: Scope, headers: Headers
    ) -> tuple[int, str, str, list[tuple[bytes, bytes]]] | None:
        """Why this HTTP request is refused (status, code, message, headers), or None."""
        if not protected(scope["path"], self.public_endpoints):
            return None
        address = client_address(scope)
        who = [address]
        if self.keys:
            wait = await self.throttle.blocked("auth_failures", address)
            if wait is not None:
                return _too_many(wait, "too many failed authentications from this address")
            given = key_from_headers(headers)
            if not key_matches(given, self.keys):
                metrics.REFUSED.labels(reason="unauthorized").inc()
                wait = await self.throttle.hit("auth_failures", address)
                if wait is not None:
                    return _too_many(wait, "too many failed authentications from this address")
                return (
                    401,
                    "unauthorized",
                    "a valid API key is required (Authorization: Bearer KEY or X-API-Key)",
                    [(b"www-authenticate", b"Bearer")],
                )
            assert given is not None
            who.append(key_identity(given))
        for identity in who:
            wait = await self.throttle.hit("api", identity)
            if wait is not None:
                return _too_many(wait, "request rate limit reached")
        if scope["method"] in WRITE_METHODS:
            if not same_origin(headers.get("origin"), headers.get("host"), self.public_base_url):
                metrics.REFUSED.labels(reason="origin").inc()
                return 403, "cross_origin", "requests from another site's pages are refused", []
            if not is_json(headers.get("content-type")):
                metrics.REFUSED.labels(reason="media_type").inc()
                return 415, "unsupported_media_type", "send Content-Type: application/json", []
        return None


def _too_many(wait: int, message: str) -> tuple[int, str, str, list[tuple[bytes, bytes]]]:
    return 429, "rate_limited", message, [(b"retry-after", str(wait).encode())]


async def _close_rate_limited(receive: Receive, send: Send, wait: int) -> None:
    """Accept, say why in a frame (browsers do not show close reasons), close 4429."""
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    frame = error_frame(
        "rate_limited",
        f"too many connections from this address; retry in {wait} s",
        retry_after=wait,
    )
    await send({"type": "websocket.send", "text": frame})
    await send({"type": "websocket.close", "code": CLOSE_RATE_LIMITED, "reason": "rate limited"})
