"""Body size limit (64 KiB on every route → 413), as plain ASGI middleware.

Bytes are counted, whatever the method and whatever `Content-Length` says: a body announced
too long is refused before it is read, and any body (a chunked one has no length) is read up
to the limit before the app sees it. The callback endpoint applies the same rule itself.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from plivo_tracker.web.hygiene import send_error

MAX_BODY = 64 * 1024


def length_too_big(value: str, max_body: int) -> bool:
    """Whether a `Content-Length` value announces more than `max_body` bytes; an unreadable one
    does (pure). isascii(): "²" is a digit to str.isdigit() but not to int()."""
    return not (value.isascii() and value.isdigit()) or len(value) > 19 or int(value) > max_body


def framing(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, bool]:
    """(`Content-Length` or None, whether a body may follow at all), in one pass (pure)."""
    length: str | None = None
    body = False
    for name, value in headers:
        if name == b"content-length":
            length = value.decode("latin-1")
            body = True
        elif name == b"transfer-encoding":
            body = True
    return length, body


async def read_limited(receive: Receive, max_body: int) -> bytes | None:
    """The whole body, or None when it exceeds `max_body` bytes (or the client left)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_body:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length, body_follows = framing(scope["headers"])
        if not body_follows:
            await self.app(scope, receive, send)
            return
        if length is not None and length_too_big(length, self.max_body):
            await self._reject(send)
            return
        body = await read_limited(receive, self.max_body)
        if body is None:
            await self._reject(send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send: Send) -> None:
        await send_error(send, 413, "payload_too_large", f"body exceeds {self.max_body} bytes")
