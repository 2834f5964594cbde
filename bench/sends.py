"""Dispatcher throughput into the simulator over real HTTP, and PLIVO_MPS pacing accuracy.

    .venv/bin/python bench/sends.py [--messages 10000] [--paced-seconds 10] [--concurrency 16]

1. `plivo-tracker simulate --no-callbacks` runs as its own process (Plivo's Message API).
2. N messages are put in the outbox of a fresh SQLite database; one dispatcher (the same class
   `serve`/`worker` run, `--concurrency` sends in flight, PLIVO_CONCURRENCY's default unless
   given) drains it with the MPS cap off: messages/s accepted by the simulator. Baseline, same
   run: the client alone (`PlivoClient.send`, same concurrency, no database).
3. With PLIVO_MPS=5 and 50 the dispatcher runs for a while: the observed steady rate (after the
   initial burst of one bucket) against the cap. Target: within ±5 %.

`--database URL` (PostgreSQL or MariaDB; a fresh database is made on that server for each run
and dropped after) measures instead what several dispatchers pay for sharing PLIVO_MPS: the
drain with the shared bucket (every token taken from the `rate_limits` row, PLIVO_MPS set far
above the rate reached) against the same drain with the bucket in memory, same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import httpx
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from plivo_tracker.composition import LOOKUP_CONNECTIONS
from plivo_tracker.db.engine import make_engine, make_writer
from plivo_tracker.db.migrate import upgrade
from plivo_tracker.logging import configure_logging
from plivo_tracker.messages.models import send_attempts
from plivo_tracker.outbound.budget import Limits
from plivo_tracker.outbound.dispatcher import DEFAULT_CONCURRENCY, Dispatcher
from plivo_tracker.outbound.outbox import SendRequest, submit, validate
from plivo_tracker.plivo.client import PlivoClient

AUTH_ID = "MABENCHXXXXXXXXXXXXX"
TOKEN = "bench-token"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_simulator(port: int, *extra: str) -> subprocess.Popen[bytes]:
    """`plivo-tracker simulate --no-callbacks` on `port` (Plivo's API limits off unless
    `extra` says otherwise), once it answers."""
    exe = Path(sys.executable).with_name("plivo-tracker")
    env = {
        **os.environ,
        "PLIVO_AUTH_ID": AUTH_ID,
        "PLIVO_AUTH_TOKEN": TOKEN,
        "LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen(
        # Plivo's API limits off: this measures our throughput, not the 300 requests / 5 s.
        [
            str(exe),
            "simulate",
            "--port",
            str(port),
            "--no-callbacks",
            "--api-per-5s",
            "0",
            "--list-per-minute",
            "0",
            *extra,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(
                f"http://127.0.0.1:{port}/v1/Account/{AUTH_ID}/Message/", auth=(AUTH_ID, TOKEN)
            )
            return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("simulator did not start")


@contextlib.asynccontextmanager
async def fresh_database(server_url: str | None, tmp: str) -> AsyncIterator[str]:
    """A new empty database: a SQLite file in `tmp`, or one made on the server of
    `server_url` (PostgreSQL or MariaDB) and dropped afterwards."""
    if server_url is None:
        yield f"sqlite+aiosqlite:///{tmp}/sends.db"
        return
    url = make_url(server_url)
    name = f"bench_sends_{secrets.token_hex(4)}"
    admin_db = "postgres" if url.get_backend_name() == "postgresql" else None
    admin = create_async_engine(url.set(database=admin_db), isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f"DROP DATABASE {name}")
        await admin.dispose()


async def run(
    base: str,
    messages: int,
    mps: float | None,
    seconds: float | None,
    concurrency: int,
    server_url: str | None = None,
    shared: bool = False,
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        async with fresh_database(server_url, tmp) as url:
            return await _run(base, url, messages, mps, seconds, concurrency, shared)


async def _run(
    base: str,
    url: str,
    messages: int,
    mps: float | None,
    seconds: float | None,
    concurrency: int,
    shared: bool,
) -> dict[str, float]:
    engine = make_engine(url)
    await upgrade(engine)
    writer = make_writer(engine)
    client = PlivoClient(base, AUTH_ID, TOKEN, pool=concurrency + LOOKUP_CONNECTIONS)
    dispatcher = Dispatcher(
        writer,
        client,
        callback_url="http://127.0.0.1:9/plivo/callback",
        mps=mps,
        shared_bucket=shared,
        limits=Limits(mps=mps, api_per_5s=0, list_per_minute=0),
        concurrency=concurrency,
    )
    to = [f"+1415{234 + n // 10_000:03d}{n % 10_000:04d}" for n in range(messages)]
    now = datetime.now(UTC)
    for start in range(0, messages, 1000):
        valid = validate(SendRequest(to=to[start : start + 1000], text="bench"), "14155550100")
        await writer.run(partial(submit, v=valid, now=now, idempotency=None))
    started, cpu0 = time.perf_counter(), time.process_time()
    sent = 0
    while sent < messages:
        if seconds is not None and time.perf_counter() - started > seconds:
            break
        sent += await dispatcher.run_once()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    async with engine.connect() as conn:
        stamps = sorted((await conn.execute(select(send_attempts.c.started_at))).scalars().all())
    await client.aclose()
    await writer.close()
    await engine.dispose()
    result = {
        "sent": float(len(stamps)),
        "elapsed": elapsed,
        "rate": len(stamps) / elapsed,
        "cpu": cpu / elapsed,  # the dispatcher's process: share of one core
        "cpu_ms": cpu * 1000 / max(1, len(stamps)),  # per message sent
    }
    if mps is not None and len(stamps) > mps + 1:
        burst = int(max(1.0, mps))
        # Send start times; the first `burst` go out at once (a full bucket).
        window = (stamps[-1] - stamps[burst - 1]).total_seconds()
        if window > 0:
            result["steady_rate"] = (len(stamps) - burst) / window
    return result


async def client_only(base: str, n: int, concurrency: int) -> float:
    """Same-run baseline: the HTTP client alone, `concurrency` sends in flight, no database."""
    client = PlivoClient(base, AUTH_ID, TOKEN, pool=concurrency + LOOKUP_CONNECTIONS)
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await client.send(src="14155550100", dst=f"1415299{i % 10_000:04d}", text="bench")

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - started
    await client.aclose()
    return n / elapsed


def shared_bucket_runs(base: str, url: str, messages: int, c: int, rounds: int) -> None:
    """The drain with the shared bucket against the same drain with the bucket in memory,
    alternating, PLIVO_MPS far above what is reached (the bucket never makes anyone wait)."""
    mps = 1_000_000.0
    baseline = asyncio.run(client_only(base, 4000, c))
    print(f"baseline, client alone into the simulator ({c} in flight): {baseline:,.0f}/s")
    for n in range(1, rounds + 1):
        for shared in (True, False):
            r = asyncio.run(run(base, messages, mps, None, c, url, shared))
            where = "shared bucket (database)" if shared else "bucket in memory"
            print(
                f"round {n}, {where}: {r['sent']:,.0f} messages in {r['elapsed']:.1f} s "
                f"= {r['rate']:,.0f}/s; dispatcher CPU {r['cpu_ms']:.2f} ms per message "
                f"({r['cpu']:.0%} of a core)"
            )
    for paced in (5.0, 50.0):
        r = asyncio.run(run(base, int(paced * 20), paced, 10.0, c, url, True))
        steady = r.get("steady_rate", 0.0)
        print(
            f"shared bucket, PLIVO_MPS={paced:g}: {r['sent']:,.0f} sent in {r['elapsed']:.1f} s; "
            f"steady rate {steady:.2f}/s ({(steady / paced - 1) * 100:+.1f} % of the cap)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--paced-seconds", type=float, default=10.0)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help="sends in flight (PLIVO_CONCURRENCY; default %(default)s)",
    )
    parser.add_argument(
        "--database",
        metavar="URL",
        help="a PostgreSQL or MariaDB server (a database made on it per run): the shared "
        "bucket's cost instead of the SQLite runs",
    )
    parser.add_argument("--rounds", type=int, default=3, help="with --database (3)")
    args = parser.parse_args()
    configure_logging("console", "warning")
    port = _free_port()
    sim = start_simulator(port)
    base = f"http://127.0.0.1:{port}"
    try:
        if args.database:
            shared_bucket_runs(base, args.database, args.messages, args.concurrency, args.rounds)
            return
        c = args.concurrency
        baseline = asyncio.run(client_only(base, 4000, c))
        print(f"baseline, client alone into the simulator ({c} in flight): {baseline:,.0f}/s")
        off = asyncio.run(run(base, args.messages, None, None, c))
        print(
            f"MPS cap off: {off['sent']:,.0f} messages in {off['elapsed']:.1f} s "
            f"= {off['rate']:,.0f}/s ({off['rate'] / baseline:.2f} of the baseline; "
            f"dispatcher process CPU {off['cpu']:.0%} of a core)"
        )
        for mps in (5.0, 50.0):
            n = int(mps * args.paced_seconds * 2)
            r = asyncio.run(run(base, n, mps, args.paced_seconds, c))
            steady = r.get("steady_rate", 0.0)
            print(
                f"PLIVO_MPS={mps:g}: {r['sent']:,.0f} sent in {r['elapsed']:.1f} s; "
                f"steady rate {steady:.2f}/s ({(steady / mps - 1) * 100:+.1f} % of the cap)"
            )
    finally:
        sim.terminate()
        sim.wait(timeout=30)


if __name__ == "__main__":
    main()
