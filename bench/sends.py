"""Dispatcher throughput into the simulator over real HTTP, and PLIVO_MPS pacing accuracy.

    .venv/bin/python bench/sends.py [--messages 10000] [--paced-seconds 10] [--concurrency 16]

1. `plivo-tracker simulate --no-callbacks` runs as its own process (Plivo's Message API).
2. N messages are put in the outbox of a fresh SQLite database; one dispatcher (the same class
   `serve`/`worker` run, `--concurrency` sends in flight, PLIVO_CONCURRENCY's default unless
   given) drains it with the MPS cap off: messages/s accepted by the simulator. Baseline, same
   run: the client alone (`PlivoClient.send`, same concurrency, no database).
3. With PLIVO_MPS=5 and 50 the dispatcher runs for a while: the observed steady rate (after the
   initial burst of one bucket) against the cap. Target: within ±5 %.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import httpx
from sqlalchemy import select

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


async def run(
    base: str, messages: int, mps: float | None, seconds: float | None, concurrency: int
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite+aiosqlite:///{tmp}/sends.db")
        await upgrade(engine)
        writer = make_writer(engine)
        client = PlivoClient(base, AUTH_ID, TOKEN, pool=concurrency + LOOKUP_CONNECTIONS)
        dispatcher = Dispatcher(
            writer,
            client,
            callback_url="http://127.0.0.1:9/plivo/callback",
            mps=mps,
            shared_bucket=False,
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
            stamps = sorted(
                (await conn.execute(select(send_attempts.c.started_at))).scalars().all()
            )
        await client.aclose()
        await writer.close()
        await engine.dispose()
    result = {
        "sent": float(len(stamps)),
        "elapsed": elapsed,
        "rate": len(stamps) / elapsed,
        "cpu": cpu / elapsed,  # the dispatcher's process: share of one core
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
    args = parser.parse_args()
    configure_logging("console", "warning")
    port = _free_port()
    sim = start_simulator(port)
    base = f"http://127.0.0.1:{port}"
    try:
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
