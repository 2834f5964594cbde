"""Server side of bench/live.py: the service with a commit-time recorder, or the baseline.

    python bench/live_server.py serve --port 8000 --out commits.pickle      # env as for serve
    python bench/live_server.py baseline --port 8001 --out commits.pickle

`serve` is `plivo-tracker serve` (same `create_app(settings)`, same uvicorn options: uvloop,
httptools, no access log) plus two recorders installed once the app has started:

- a post-commit listener on the group committer: `(event_id, MessageUUID, status, time.time())`
  for every status change, called right after COMMIT returns on the event loop;
- a wrapper around `LiveHub.publish`: `(event_id, time.time())` when the hub hands a frame to the
  subscribers' queues (so commit → frame splits into "hub read" and "send"), and a timer on
  the hub's database read (start, end, rows).

`baseline` is the floor of the same transport without a database or a hub: a raw ASGI app on
the same uvicorn options that answers every POST /plivo/callback 200 at once and broadcasts one
status frame of the same shape (its MessageUUID and Status from the form) to every WebSocket
client through a per-client queue, recording `(id, MessageUUID, status, time.time())` as if it
had committed it. Both send `{"type": "ready"}` first, as WS /ws does.

On shutdown (SIGTERM/SIGINT; written when the lifespan shutdown completes, i.e. after the
committer has committed everything queued) the records are pickled to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pickle
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import uvicorn

from plivo_tracker.cli import server_options
from plivo_tracker.config import Settings, load_settings

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGI = Callable[[Scope, Receive, Send], Awaitable[None]]

CALLBACK_PATH = "/plivo/callback"


class Records:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.commits: list[tuple[int, str | None, str, float]] = []
        self.published: list[tuple[int, float]] = []
        self.reads: list[tuple[float, float, int]] = []  # hub reads: (start, end, rows)

    def write(self) -> None:
        data = {"commits": self.commits, "published": self.published, "reads": self.reads}
        self.out.write_bytes(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))


def with_lifespan_hooks(
    app: ASGI, on_started: Callable[[], None], on_stopped: Callable[[], None]
) -> ASGI:
    """Run `on_started` once the app's lifespan startup is complete, `on_stopped` after shutdown."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def hooked_send(message: dict[str, Any]) -> None:
            if message["type"] == "lifespan.startup.complete":
                on_started()
            elif message["type"] == "lifespan.shutdown.complete":
                on_stopped()
            await send(message)

        await app(scope, receive, hooked_send)

    return wrapped


# ---- serve -------------------------------------------------------------------------------


def serve_app(records: Records, settings: Settings) -> ASGI:
    from plivo_tracker.app import create_app
    from plivo_tracker.inbound.ingest import StatusChange
    from plivo_tracker.live.hub import Frame
    from plivo_tracker.logging import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    app = create_app(settings)

    def install() -> None:
        ctx = app.state.ctx
        committer, hub = ctx.committer, ctx.hub
        # GroupCommitter takes its listener in the constructor only (create_app passes none), so
        # the bench sets the attribute; chained in case a later version installs one itself.
        previous = committer.on_changes

        def on_changes(changes: list[StatusChange]) -> None:
            now = time.time()
            records.commits.extend((c.event_id, c.message_uuid, c.status, now) for c in changes)
            if previous is not None:
                previous(changes)

        committer.on_changes = on_changes
        publish = hub.publish

        def timed_publish(frames: list[Frame]) -> None:
            now = time.time()
            records.published.extend((f.id, now) for f in frames)
            publish(frames)

        hub.publish = timed_publish
        read_after = hub._read_after

        async def timed_read(after: int, limit: int) -> list[dict[str, Any]]:
            started = time.time()
            rows = await read_after(after, limit)
            records.reads.append((started, time.time(), len(rows)))
            return rows

        hub._read_after = timed_read

    return with_lifespan_hooks(app, install, records.write)


# ---- baseline ----------------------------------------------------------------------------


def baseline_app(records: Records) -> ASGI:
    queues: set[asyncio.Queue[str]] = set()
    next_id = 0

    async def http(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal next_id
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["path"] == CALLBACK_PATH:
            fields = dict(parse_qsl(body.decode()))
            next_id += 1
            frame = {
                "id": next_id,
                "type": "status",
                "message_id": next_id,
                "message_uuid": fields.get("MessageUUID"),
                "status": fields.get("Status", ""),
                "previous_status": None,
                "error_code": None,
                "at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            }
            text = json.dumps(frame, separators=(",", ":"))
            records.commits.append((next_id, frame["message_uuid"], frame["status"], time.time()))
            for q in queues:
                q.put_nowait(text)
            payload = b'{"result":"stored"}'
        else:
            payload = b'{"status":"ok"}'
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(payload)),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def websocket(scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        queue: asyncio.Queue[str] = asyncio.Queue()
        queues.add(queue)

        async def drain() -> None:
            while (await receive())["type"] != "websocket.disconnect":
                pass

        async def stream() -> None:
            await send(
                {"type": "websocket.send", "text": json.dumps({"type": "ready", "last_id": 0})}
            )
            while True:
                await send({"type": "websocket.send", "text": await queue.get()})

        tasks = {asyncio.ensure_future(drain()), asyncio.ensure_future(stream())}
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            queues.discard(queue)
            for task in tasks:
                task.cancel()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "http":
            await http(scope, receive, send)
        elif scope["type"] == "websocket":
            await websocket(scope, receive, send)

    return with_lifespan_hooks(app, lambda: None, records.write)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("serve", "baseline"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    records = Records(args.out)
    # Both modes read the settings `serve` would (bench/live.py passes the same environment),
    # so the baseline runs with the same server limits.
    settings = load_settings()
    if args.mode == "serve":
        app, log_level = serve_app(records, settings), settings.log_level
    else:
        app, log_level = baseline_app(records), "warning"
    # The options of plivo_tracker.cli.serve.
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        access_log=False,
        log_level=log_level,
        **server_options(settings),
    )


if __name__ == "__main__":
    main()
