"""A request id on every request: in every log line it causes, and in the response.

`RequestId` is the outermost ASGI layer (`create_app`). It takes the client's `X-Request-ID`
when it is sane (1 to 64 visible ASCII characters), otherwise makes one (a UUID4 in hex), binds
it as `request_id` in structlog's context for the request's lifetime (reset afterwards), and
sends it back as `X-Request-ID` (on a WebSocket handshake too). uvicorn writes its access line
from inside the app's `send` call, so that line carries the id as well (logging.py), with the
time from here to the response's start.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Protocol

import structlog
from starlette.types import Message, Receive, Scope, Send

from plivo_tracker.logging import request_started

HEADER = b"x-request-id"
_SANE = re.compile(rb"[!-~]{1,64}")


class StatefulApp(Protocol):
    """An ASGI app with the FastAPI app's `state` (CallbackEndpoint)."""

    @property
    def state(self) -> Any: ...

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


def incoming_id(scope: Scope) -> str | None:
    """The request's own X-Request-ID when it is sane (the first one), else None."""
    for name, value in scope.get("headers", ()):
        if name.lower() == HEADER:
            return value.decode("ascii") if _SANE.fullmatch(value) else None
    return None


def new_id() -> str:
    return uuid.uuid4().hex


class RequestId:
    """Plain-ASGI middleware: see the module docstring. `state` is the wrapped app's."""

    def __init__(self, app: StatefulApp) -> None:
        self.app = app

    @property
    def state(self) -> Any:
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = incoming_id(scope) or new_id()
        header = (HEADER, request_id.encode("ascii"))
        opening = "http.response.start" if scope["type"] == "http" else "websocket.accept"

        async def send_with_id(message: Message) -> None:
            if message["type"] == opening:
                headers = [h for h in message.get("headers", ()) if h[0].lower() != HEADER]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        token = request_started.set(time.perf_counter())
        try:
            with structlog.contextvars.bound_contextvars(request_id=request_id):
                await self.app(scope, receive, send_with_id)
        finally:
            request_started.reset(token)
