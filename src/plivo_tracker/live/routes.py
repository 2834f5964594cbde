"""WS /ws: auth, subscribe, replay ?since= from the database, then stream live; heartbeats.

The seam between replay and live is safe because the subscription starts *before* the replay:
anything committed after the replay's last read is in the subscriber's queue, anything before it
was read by the replay, and frames are sent only when their id is above the last one sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from datetime import UTC, datetime
from typing import Any

import structlog
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.types import Message
from starlette.websockets import WebSocketState

from plivo_tracker.db.base import MAX_ID
from plivo_tracker.live.hub import Filter, LiveHub, Subscriber, pages_of_changes
from plivo_tracker.messages import repository as repo
from plivo_tracker.messages.status import MessageStatus
from plivo_tracker.web.access import (
    CLOSE_RATE_LIMITED,
    client_address,
    key_from_headers,
    key_matches,
    same_origin,
)
from plivo_tracker.web.deps import Context
from plivo_tracker.web.envelope import error_frame

log = structlog.get_logger(__name__)
router = APIRouter()

AUTH_TIMEOUT = 5.0
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_SLOW = 4408
CLOSE_TOO_BIG = 1009
FIRST_FRAME_MAX = 1024  # an auth frame is ~60 characters
AUTH_FRAME = 'the first frame must be {"type": "auth", "api_key": KEY}'
CLOSE_GOING_AWAY = 1001
SLOW = "this client read too slowly and was dropped; reconnect with ?since=<last id>"
_STATUSES = frozenset(s.value for s in MessageStatus)


class Refused(Exception):
    def __init__(self, close_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.close_code, self.code, self.message = close_code, code, message


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _check_origin(ws: WebSocket, public_base_url: str) -> None:
    """Browsers let any page open a WebSocket to any host (no CORS): a page from another site
    must not read the stream of a dashboard running on localhost. Clients that are not
    browsers send no Origin and are not affected."""
    origin = ws.headers.get("origin")
    if not same_origin(origin, ws.headers.get("host"), public_base_url):
        raise Refused(CLOSE_FORBIDDEN, "forbidden_origin", "WebSocket from another site refused")


def read_auth_frame(frame: Message) -> str:
    """The API key of a first frame `{"type": "auth", "api_key": KEY}` (pure); Refused with
    4400 for anything else, so a client learns what was wrong instead of a bare 4401."""
    text = frame.get("text")
    if text is None:
        raise Refused(CLOSE_BAD_REQUEST, "bad_frame", "the first frame must be a text frame")
    if len(text) > FIRST_FRAME_MAX:
        raise Refused(
            CLOSE_TOO_BIG, "frame_too_large", f"the first frame must be under {FIRST_FRAME_MAX}"
        )
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):
        raise Refused(CLOSE_BAD_REQUEST, "bad_frame", "the first frame is not JSON") from None
    key = msg.get("api_key") if isinstance(msg, dict) and msg.get("type") == "auth" else None
    if not isinstance(key, str):
        raise Refused(CLOSE_BAD_REQUEST, "bad_frame", AUTH_FRAME)
    return key


async def _authenticate(ws: WebSocket, ctx: Context) -> None:
    """A key in a header or ?api_key=, else a first frame {"type": "auth", "api_key": …}.

    The server reads at most WS_MAX_FRAME bytes of a frame (uvicorn's ws_max_size, set by
    `serve`), and we look at the first one only when no key came with the handshake."""
    keys = ctx.settings.api_keys
    if not keys:
        return
    address = client_address(ws.scope)
    wait = await ctx.throttle.blocked("auth_failures", address)
    if wait is not None:
        raise Refused(CLOSE_RATE_LIMITED, "rate_limited", f"too many failed keys; wait {wait} s")
    given = key_from_headers(ws.headers) or ws.query_params.get("api_key")
    if given is None:
        try:
            frame = await asyncio.wait_for(ws.receive(), AUTH_TIMEOUT)
        except TimeoutError:
            frame = None
        if frame is None or frame["type"] == "websocket.disconnect":
            given = None
        else:
            given = read_auth_frame(frame)
    if not key_matches(given, keys):
        await ctx.throttle.hit("auth_failures", address)
        raise Refused(CLOSE_UNAUTHORIZED, "unauthorized", "a valid API key is required")


async def _parse(ws: WebSocket, ctx: Context) -> tuple[int | None, Filter]:
    params = ws.query_params
    since: int | None = None
    if params.get("since"):
        raw = params["since"]
        # ASCII digits (str.isdigit takes "²"), and no more than an id column holds (the
        # length first: int() refuses over 4,300 digits).
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or int(raw) > MAX_ID:
            raise Refused(CLOSE_BAD_REQUEST, "bad_since", "since must be an event id (digits)")
        since = int(raw)
    statuses: frozenset[str] | None = None
    if params.get("status"):
        statuses = frozenset(s.strip().lower() for s in params["status"].split(",") if s.strip())
        unknown = sorted(statuses - _STATUSES)
        if unknown:
            raise Refused(CLOSE_BAD_REQUEST, "bad_status", f"unknown status {', '.join(unknown)}")
    message_id: int | None = None
    if params.get("message_id"):
        ref = params["message_id"].strip()[:64]
        async with ctx.engine.connect() as conn:
            row = await repo.find_message(conn, ref)
        if row is None:
            raise Refused(CLOSE_BAD_REQUEST, "not_found", f"no message with id {ref!r}")
        message_id = int(row["id"])
    return since, Filter(message_id, statuses)


async def _replay(ws: WebSocket, ctx: Context, since: int, flt: Filter) -> int:
    """Send every change above `since` from the database; returns the last id read."""
    reader = ctx.reader
    assert reader is not None

    async def read_after(after: int, limit: int) -> list[dict[str, Any]]:
        read = functools.partial(
            repo.events_after, after=after, limit=limit, message_id=flt.message_id
        )
        return await reader.run(read)

    last = since
    async for frames, read_up_to in pages_of_changes(read_after, since):
        for frame in frames:
            if flt(frame):
                await ws.send_text(frame.text)
        last = read_up_to
    return last


async def _stream(ws: WebSocket, sub: Subscriber, last: int, hub: LiveHub, beat: float) -> None:
    """Send queued frames above `last` for ever, and a heartbeat when idle for `beat` s."""
    queue = sub.queue
    while True:
        if queue.empty():
            try:
                frame = await asyncio.wait_for(queue.get(), beat)
            except TimeoutError:
                heartbeat = {"type": "heartbeat", "at": _now(), "last_id": hub.last_id}
                await ws.send_text(json.dumps(heartbeat))
                continue
        else:
            frame = queue.get_nowait()  # a backlog: no timer per frame
        if frame.id > last:
            await ws.send_text(frame.text)
            last = frame.id


async def _drain_incoming(ws: WebSocket) -> None:
    """Read (and ignore) what the client sends, so a closed socket is noticed at once."""
    while (await ws.receive())["type"] != "websocket.disconnect":
        pass


@router.websocket("/ws")
async def live(ws: WebSocket) -> None:
    ctx: Context = ws.app.state.ctx
    hub = ctx.hub
    await ws.accept()
    try:
        _check_origin(ws, ctx.settings.public_base_url)
        await _authenticate(ws, ctx)
        since, flt = await _parse(ws, ctx)
    except Refused as exc:
        await ws.send_text(error_frame(exc.code, exc.message))
        await ws.close(exc.close_code)
        return
    except WebSocketDisconnect:
        return
    assert hub is not None
    sub = hub.subscribe(flt)
    tasks: set[asyncio.Future[Any]] = {
        asyncio.ensure_future(_drain_incoming(ws)),
        asyncio.ensure_future(sub.ended.wait()),
    }
    try:
        last = hub.last_id if since is None else await _replay(ws, ctx, since, flt)
        beat = ctx.settings.live_heartbeat_seconds
        ready = {"type": "ready", "last_id": last, "heartbeat_seconds": beat}
        await ws.send_text(json.dumps(ready))
        tasks.add(asyncio.ensure_future(_stream(ws, sub, last, hub, beat)))
        done, _ = await asyncio.wait(tasks, return_when="FIRST_COMPLETED")
        for task in done:
            task.result()  # the streamer's send error, if that is what ended it
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # the client went away mid-send
    finally:
        hub.unsubscribe(sub)
        for task in tasks:
            task.cancel()
        # Collect every task's end: the streamer may have failed its send (the client gone)
        # after `wait` returned for the reader; left unread, that error is logged as "Task
        # exception was never retrieved" when the task is collected.
        await asyncio.gather(*tasks, return_exceptions=True)
    if sub.reason is None or ws.client_state is not WebSocketState.CONNECTED:
        return
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError, TimeoutError):
        if sub.reason == "overflow":
            # A client this far behind may not read the close either: don't wait on it for long.
            await asyncio.wait_for(ws.send_text(error_frame("too_slow", SLOW)), 1.0)
            await asyncio.wait_for(ws.close(CLOSE_TOO_SLOW), 1.0)
        else:
            await asyncio.wait_for(ws.close(CLOSE_GOING_AWAY), 1.0)
    log.info("live.closed", reason=sub.reason)
