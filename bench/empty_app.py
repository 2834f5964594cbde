"""The baseline for bench/callbacks.py: a raw ASGI app that reads the body and answers 200.

It does the least any callback endpoint must do (read the whole request, answer with a small
JSON body), served by uvicorn with the options `plivo-tracker serve` uses: uvloop, httptools, no
access log, one process (or `--workers N` uvicorn workers, as `serve --workers N` would run),
the same connection limits and proxy-header handling. The ratio serve/empty therefore measures
what the service adds (signature check, parsing, the journal append) on top of the HTTP stack
itself.

    python bench/empty_app.py --host 127.0.0.1 --port 8001 [--workers 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import uvicorn

from plivo_tracker.cli import server_options
from plivo_tracker.config import load_settings

BODY = b'{"result":"stored"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return  # the client went away
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--log-level", default="warning")
    parser.add_argument(
        "--workers", type=int, default=None, help="uvicorn worker processes (default: none)"
    )
    args = parser.parse_args()
    # The server limits `serve` would set from the same environment (bench/callbacks.py passes
    # the service's environment to both).
    settings = load_settings()
    # Same server options as plivo_tracker.cli.serve. Workers need the app as an import string
    # (each worker process imports it).
    target: Any = app
    extra: dict[str, Any] = {}
    if args.workers is not None:
        target = "empty_app:app"
        extra = {"workers": args.workers, "app_dir": str(Path(__file__).resolve().parent)}
    uvicorn.run(
        target,
        host=args.host,
        port=args.port,
        access_log=False,
        log_level=args.log_level,
        **server_options(settings),
        **extra,
    )


if __name__ == "__main__":
    main()
