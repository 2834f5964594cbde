"""Body size limit (64 KiB on POST routes → 413), as plain ASGI middleware so it costs ~nothing."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from plivo_tracker.web.hygiene import send_error

MAX_BODY = 64 * 1024


async def _reject(send: Send) -> None:
    await send_error(send, 413, "payload_too_large", f"body exceeds {MAX_BODY} bytes")


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_body
                except ValueError:
                    too_big = True
                if too_big:
                    await _reject(send)
                    return
        if any(name == b"content-length" for name, _ in scope["headers"]):
            # The server stops reading at Content-Length, which was checked above.
            await self.app(scope, receive, send)
            return
        # Chunked upload without a length: read it (up to the limit) before the app sees it.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_body:
                await _reject(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
