"""Server side of bench/live.py: the service with a commit-time recorder, or the baseline.

    python bench/live_server.py serve --port 8000 --out commits.pickle      # env as for serve
    python bench/live_server.py baseline --port 8001 --out commits.pickle

`serve` is `plivo-tracker serve` (same `create_app(settings)`, same uvicorn options: uvloop,
httptools, no access log) plus two recorders installed once the app has started:

- a wrapper around the projector's pass (`Projector.project_once`, the only writer of
  `status_events` in this set-up: the callbacks' 200 only appends them to the journal, the
  projector applies them in passes, docs/adr/0011): `(event_id, MessageUUID, status,
  time.time())` for every status change the pass wrote, stamped the moment the pass returns on
  the event loop, i.e. right after its COMMIT (and its metrics). The changes are the
  `status_events` rows above the last id seen, read right after the stamp through the app's
  own reader (`ctx.reader`, what the hub reads through); passes run one at a time, so they
  are exactly the pass's rows;
- a wrapper around `LiveHub.publish`: `(event_id, time.time())` when the hub hands a frame to the
  subscribers' queues (so commit → frame splits into "hub read" and "send"), and a timer on
  the hub's database read (start, end, rows).

`baseline` is the floor of the same transport without a database or a hub: a raw ASGI app on
the same uvicorn options that answers every POST /plivo/callback 200 at once and broadcasts one
status frame of the same shape (its MessageUUID and Status from the form) to every WebSocket
client through a per-client queue, recording `(id, MessageUUID, status, time.time())` as if it
had committed it. Both send `{"type": "ready"}` first, as WS /ws does.

On shutdown (SIGTERM/SIGINT; written when the lifespan shutdown completes, i.e. after the
committer has committed everything queued and the projector's last pass applied it) the
records are pickled to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pickle
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import uvicorn

from plivo_tracker.cli import server_options
from plivo_tracker.config import Settings, load_settings

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
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
    app: ASGI, on_started: Callable[[], Awaitable[None]], on_stopped: Callable[[], None]
) -> ASGI:
    """Run `on_started` once the app's lifespan startup is complete (before the server is told
    so, hence before it takes requests), `on_stopped` after shutdown."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def hooked_send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "lifespan.startup.complete":
                await on_started()
            elif message["type"] == "lifespan.shutdown.complete":
                on_stopped()
            await send(message)

        await app(scope, receive, hooked_send)

    return wrapped


# ---- serve -------------------------------------------------------------------------------


def serve_app(records: Records, settings: Settings) -> ASGI:
    from functools import partial

    from plivo_tracker.app import create_app
    from plivo_tracker.live.hub import Frame, is_change
    from plivo_tracker.logging import configure_logging
    from plivo_tracker.messages import repository as repo
    from plivo_tracker.messages.projector import Projection

    configure_logging(settings.log_format, settings.log_level)
    app = create_app(settings)

    async def install() -> None:
        ctx = app.state.ctx
        projector, reader, hub = ctx.projector, ctx.reader, ctx.hub
        last = await reader.run(repo.newest_event_id)
        project_once = projector.project_once

        async def timed_project_once(limit: int | None = None) -> Projection:
            nonlocal last
            result: Projection = await project_once(limit)
            now = time.time()  # the pass has committed: its events are visible from here on
            if result.applied:
                while True:  # every event the pass wrote (a pass may write more than a page)
                    rows = await reader.run(partial(repo.events_after, after=last, limit=1000))
                    if not rows:
                        break
                    last = rows[-1]["id"]
                    records.commits.extend(
                        (r["id"], r["message_uuid"], r["message_status"], now)
                        for r in rows
                        if is_change(r)
                    )
            return result

        projector.project_once = timed_project_once
        publish = hub.publish

        def timed_publish(frames: list[Frame]) -> None:
            now = time.time()
            records.published.extend((f.id, now) for f in frames)
            publish(frames)

        hub.publish = timed_publish
        read_after = hub._read_after

        async def timed_read(after: int, limit: int) -> list[dict[str, Any]]:
            started = time.time()
            rows: list[dict[str, Any]] = await read_after(after, limit)
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
            frame: dict[str, Any] = {
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

    async def nothing() -> None:
        return None

    return with_lifespan_hooks(app, nothing, records.write)


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
