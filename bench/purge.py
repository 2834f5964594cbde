"""Callback ack latency while the retention purge deletes N old messages, against a same-run
baseline: the same load without a purge.

    python bench/purge.py                        # SQLite in a temp dir, 50,000 old messages
    python bench/purge.py --messages 200000 --rate 300 --batch-size 500
    python bench/purge.py --database-url postgresql+asyncpg://127.0.0.1:5432/plivo_bench_purge
    python bench/purge.py --write docs/benchmarks.md       # append a dated section

Two processes:

1. the server, `bench/purge.py serve`: the app `plivo-tracker serve` runs (same `create_app`,
   same uvicorn options: uvloop, httptools, no access log), without the dispatcher and loops,
   plus one route, `POST /_bench/purge`, that runs one pass of the same `Purger` the loop runs,
   on the server's own writer, and answers when it is done;
2. this process: seeds N old messages (settled, 100-300 days old, each with three status events,
   a send attempt, an outbox row and three callback nonces) straight into the database, starts
   the server, then sends pre-signed callbacks (V2 + V3, the service's own signing code; queued,
   sent, delivered of fresh messages) over keep-alive HTTP/1.1 from raw asyncio streams, open
   loop: request i is due at t0 + i/rate and goes out on any idle connection of --connections.

Phase 1, the baseline: --duration seconds of that load. Phase 2: the same load, and one second
in, `POST /_bench/purge`; the load goes on until the purge answers. Latencies are counted for
the requests sent while the purge ran. Printed per phase: requests and their rate, ack latency
(the 200's last byte read − the request written) p50 / p99 / max, non-200 answers; for the purge:
its time, rows deleted per table, batches, messages per second. Then LOST: acknowledged
callbacks whose nonce is not in `callback_nonces` (must be 0), and the old messages left
(must be 0: every seeded message is settled). Nothing here is a test: it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import re
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from callbacks import (
    ACCESS_ENV,
    Proc,
    append_section,
    ensure_postgres_database,
    free_port,
    git_commit,
    is_postgres,
    machine,
)
from live import AUTH_ID, PUBLIC_BASE_URL, Conn, build_requests, exchange

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-purge-token"
RETENTION_DAYS = 90
SEED_CHUNK = 2000


# ---- the server ----------------------------------------------------------------------------


def serve_main(argv: list[str]) -> None:
    """The service's app with the purge route; settings from the environment, as `serve`."""
    import uvicorn

    from plivo_tracker.app import create_app
    from plivo_tracker.cli import server_options
    from plivo_tracker.config import load_settings
    from plivo_tracker.logging import configure_logging
    from plivo_tracker.retention.purger import make_purger

    p = argparse.ArgumentParser(prog="purge.py serve")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    app = create_app(settings, dispatch=False)

    async def bench_app(scope: Any, receive: Any, send: Any) -> None:
        """The service, plus POST /_bench/purge: one purge pass in the server's own process,
        beside the callbacks it is taking (its timing and counts as JSON)."""
        if scope["type"] != "http" or scope["path"] != "/_bench/purge":
            await app(scope, receive, send)
            return
        purger = make_purger(app.state.ctx.writer, settings, loop=False)
        result = await purger.run_once()
        assert result is not None
        body = json.dumps(
            {"counts": result.counts(), "seconds": result.seconds, "batches": result.batches}
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(
        bench_app,
        host="127.0.0.1",
        port=args.port,
        access_log=False,
        log_level="warning",
        **server_options(settings),
    )


# ---- seeding -------------------------------------------------------------------------------


async def seed(url: str, n: int) -> None:
    """N settled messages 100-300 days old with their history, written in chunks."""
    from sqlalchemy import text

    from plivo_tracker.db.engine import make_engine
    from plivo_tracker.db.migrate import upgrade
    from plivo_tracker.messages.models import (
        callback_nonces,
        messages,
        outbox,
        send_attempts,
        status_events,
    )

    engine = make_engine(url)
    await upgrade(engine)
    if engine.dialect.name == "postgresql":
        # A database reused from an earlier run: empty it. RESTART IDENTITY restarts the
        # journal's ids, so the projector's cursor goes back to 0 with it (else it would skip
        # the new journal rows up to the old position).
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "TRUNCATE messages, status_events, message_parts, send_attempts, outbox, "
                    "callback_nonces, journal, quarantine, idempotency_keys "
                    "RESTART IDENTITY CASCADE"
                )
            )
            await conn.execute(text("UPDATE cursors SET position = 0"))
    rng = random.Random(7)
    now = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    for start in range(0, n, SEED_CHUNK):
        size = min(SEED_CHUNK, n - start)
        rows: list[dict[str, Any]] = []
        for _ in range(size):
            created = now - dt.timedelta(days=100 + rng.random() * 200)
            status = rng.choice(("delivered", "delivered", "delivered", "undelivered", "failed"))
            rows.append(
                {
                    "message_uuid": str(rng.getrandbits(122)),
                    "origin": "api",
                    "direction": "outbound",
                    "status": status,
                    "error_code": None if status == "delivered" else "30",
                    "to_number": "+14155550101",
                    "from_number": "14155550100",
                    "type": "sms",
                    "mcc": "310",
                    "mnc": "004",
                    "has_conflict": False,
                    "created_at": created,
                    "updated_at": created + dt.timedelta(seconds=5),
                    "sent_at": created + dt.timedelta(seconds=1),
                    "text": "Your code is 482193",
                }
            )
        async with engine.begin() as conn:
            result = await conn.execute(
                messages.insert().returning(
                    messages.c.id, messages.c.created_at, sort_by_parameter_order=True
                ),
                rows,
            )
            made = [(int(i), at) for i, at in result]
            events, nonces, attempts, boxes = [], [], [], []
            for (message_id, at), row in zip(made, rows, strict=True):
                for seq, status in enumerate(("queued", "sent", row["status"]), start=1):
                    key = f"{row['message_uuid']}|{status}|{seq}"
                    events.append(
                        {
                            "message_id": message_id,
                            "message_uuid": row["message_uuid"],
                            "status": status,
                            "message_status": status,
                            "sequence": seq,
                            "effect": "applied",
                            "dedupe_key": key,
                            "source": "callback",
                            "received_at": at + dt.timedelta(seconds=seq),
                            "payload": json.dumps({"MessageUUID": row["message_uuid"]}),
                        }
                    )
                    nonces.append({"nonce": f"seed-{key}", "received_at": at})
                attempts.append(
                    {
                        "message_id": message_id,
                        "attempt": 1,
                        "started_at": at,
                        "finished_at": at,
                        "outcome": "accepted",
                    }
                )
                boxes.append(
                    {
                        "message_id": message_id,
                        "state": "done",
                        "attempts": 1,
                        "next_attempt_at": at,
                        "created_at": at,
                    }
                )
            await conn.execute(status_events.insert(), events)
            await conn.execute(callback_nonces.insert(), nonces)
            await conn.execute(send_attempts.insert(), attempts)
            await conn.execute(outbox.insert(), boxes)
    await engine.dispose()
    print(f"seeded {n:,} old messages in {time.perf_counter() - started:.1f} s")


async def count(url: str, run: str) -> tuple[int, int]:
    """(this run's nonces stored, messages older than the retention left)."""
    from sqlalchemy import func, select

    from plivo_tracker.db.engine import make_engine
    from plivo_tracker.messages.models import callback_nonces, messages

    engine = make_engine(url)
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=RETENTION_DAYS)
    async with engine.connect() as conn:
        stored = await conn.scalar(
            select(func.count()).where(callback_nonces.c.nonce.like(f"{run}%"))
        )
        old = await conn.scalar(select(func.count()).where(messages.c.created_at < cutoff))
    await engine.dispose()
    return int(stored or 0), int(old or 0)


# ---- the load ------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    sent: array[float] = field(default_factory=lambda: array("d"))
    acked: array[float] = field(default_factory=lambda: array("d"))
    statuses: dict[int, int] = field(default_factory=dict)
    window: tuple[float, float] = (0.0, 0.0)  # the requests counted: sent inside it
    purge: dict[str, Any] | None = None

    def latencies(self) -> list[float]:
        lo, hi = self.window
        return sorted(
            a - s for s, a in zip(self.sent, self.acked, strict=True) if a and lo <= s < hi
        )


async def run_phase(
    phase: Phase,
    port: int,
    reqs: list[bytes],
    first: int,
    rate: int,
    connections: int,
    seconds: float,
    purge: bool,
) -> int:
    """Send reqs[first:] open loop at `rate` for `seconds` (with `purge`: until the purge has
    answered, at least one second after it started); returns the next unsent index."""
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(connections)]
    idle: asyncio.Queue[Conn] = asyncio.Queue()
    for c in conns:
        idle.put_nowait(c)
    done = asyncio.Event()
    purge_task: asyncio.Task[None] | None = None

    async def do_purge() -> None:
        await asyncio.sleep(1.0)
        started = time.time()
        async with httpx.AsyncClient(timeout=3600) as http:
            resp = await http.post(f"http://127.0.0.1:{port}/_bench/purge")
        resp.raise_for_status()
        phase.purge = resp.json()
        phase.window = (started, time.time())
        done.set()

    async def request(i: int, conn: Conn) -> None:
        code = await exchange(conn, reqs[i])
        phase.acked[i - first] = time.time()
        phase.statuses[code] = phase.statuses.get(code, 0) + 1
        idle.put_nowait(conn)

    if purge:
        purge_task = asyncio.create_task(do_purge())
    start = time.monotonic()
    t_start = time.time()
    tasks: set[asyncio.Task[None]] = set()
    i = first
    while i < len(reqs):
        due = start + (i - first) / rate
        if purge_task is None and due - start >= seconds:
            break
        if purge_task is not None and done.is_set():
            break
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        conn = await idle.get()
        phase.sent.append(time.time())
        phase.acked.append(0.0)
        task = asyncio.create_task(request(i, conn))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
    await asyncio.gather(*tasks)
    if purge_task is not None:
        await purge_task
    else:
        phase.window = (t_start, time.time())
    for _, writer in conns:
        writer.close()
    return i


# ---- report --------------------------------------------------------------------------------


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, max(0, round(p / 100 * len(xs)) - 1))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def table(base: Phase, during: Phase, label: str, n: int, args: argparse.Namespace) -> str:
    rows = [
        "| | baseline (no purge) | while purging |",
        "| --- | --- | --- |",
    ]
    stats = []
    for ph in (base, during):
        lat = ph.latencies()
        span = ph.window[1] - ph.window[0]
        bad = sum(v for k, v in ph.statuses.items() if k != 200)
        stats.append((len(lat), len(lat) / span if span else 0.0, lat, bad))
    rows.append(f"| requests counted | {stats[0][0]:,} | {stats[1][0]:,} |")
    rows.append(f"| rate achieved | {stats[0][1]:,.0f}/s | {stats[1][1]:,.0f}/s |")
    for p in (50, 99):
        rows.append(f"| ack p{p} | {ms(pct(stats[0][2], p))} | {ms(pct(stats[1][2], p))} |")
    rows.append(f"| ack max | {ms(max(stats[0][2]))} | {ms(max(stats[1][2]))} |")
    rows.append(f"| non-200 | {stats[0][3]} | {stats[1][3]} |")
    purge = during.purge or {}
    counts = purge.get("counts", {})
    seconds = float(purge.get("seconds", 0.0))
    lines = [
        f"{label}, {n:,} old messages, load {args.rate}/s over {args.connections} "
        f"connections, PURGE_BATCH_SIZE {args.batch_size}",
        "",
        *rows,
        "",
        f"purge: {seconds:.1f} s, {purge.get('batches', 0):,} batches, "
        f"{counts.get('messages', 0) / seconds if seconds else 0:,.0f} messages/s; deleted "
        + ", ".join(f"{t} {c:,}" for t, c in counts.items() if c),
    ]
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve_main(sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000, help="old messages (50,000)")
    parser.add_argument("--rate", type=int, default=300, help="callbacks per second (300)")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections")
    parser.add_argument("--duration", type=int, default=15, help="baseline seconds (15)")
    parser.add_argument("--batch-size", type=int, default=500, help="PURGE_BATCH_SIZE (500)")
    parser.add_argument("--database-url", default=None, help="PostgreSQL (default: SQLite)")
    parser.add_argument("--write", default=None, help="append a dated section to this file")
    parser.add_argument("--max-purge-seconds", type=int, default=600)
    args = parser.parse_args()

    import uvloop

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        url = args.database_url or f"sqlite+aiosqlite:///{work}/purge.db"
        label = "PostgreSQL" if is_postgres(url) else "SQLite"
        if is_postgres(url):
            asyncio.run(ensure_postgres_database(url))
        asyncio.run(seed(url, args.messages))
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
            "ALLOW_PRIVATE_CALLBACK_URL": "true",
            "PLIVO_AUTH_ID": AUTH_ID,
            "PLIVO_AUTH_TOKEN": TOKEN,
            "PLIVO_AUTH_TOKENS_PREVIOUS": "",
            "PLIVO_MAIN_AUTH_TOKEN": "",
            "PLIVO_SIGNATURE": "any",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "warning",
            "SPOOL_DIR": str(work / "spool"),
            "RETENTION_DAYS": str(RETENTION_DAYS),
            "PURGE_BATCH_SIZE": str(args.batch_size),
            "RESEND_ERROR_CODES": "none",
            **ACCESS_ENV,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        }
        server = Proc(
            [sys.executable, str(Path(__file__)), "serve", "--port", str(port)],
            env,
            work,
            work / "server.log",
        )
        try:
            server.wait_http(f"http://127.0.0.1:{port}/health")
            total = args.rate * (args.duration + args.max_purge_seconds + 5)
            reqs, _ = build_requests(total, TOKEN, f"127.0.0.1:{port}")
            found = re.search(rb"(?i)nonce: (\d{8})", reqs[0])
            run = found.group(1).decode() if found else ""
            base, during = Phase("baseline"), Phase("purge")

            async def both() -> None:
                nxt = await run_phase(
                    base, port, reqs, 0, args.rate, args.connections, args.duration, False
                )
                await asyncio.sleep(1.0)
                await run_phase(during, port, reqs, nxt, args.rate, args.connections, 0.0, True)

            uvloop.run(both())
        finally:
            code = server.stop()
        acked = sum(1 for ph in (base, during) for a in ph.acked if a)
        stored, old_left = asyncio.run(count(url, run)) if run else (acked, -1)
        report = table(base, during, label, args.messages, args)
        report += (
            f"\n\nLOST (acknowledged, nonce not stored): {acked - stored} of {acked:,}; "
            f"old messages left: {old_left:,}; server exit {code}"
        )
        print()
        print(report)
        if args.write:
            stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
            section = (
                f"## {stamp} — purge beside callbacks, {label}\n\n"
                f"Commit {git_commit()}; {machine()}.\n\n```text\n{report}\n```\n"
            )
            append_section(Path(args.write), section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
