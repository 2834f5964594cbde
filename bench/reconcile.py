"""Reconciling 1,000 stuck messages within Plivo's documented limits (issue 10).

    .venv/bin/python bench/reconcile.py [--messages 1000] [--database postgresql://...]

1. `plivo-tracker simulate --no-callbacks` runs as its own process, with Plivo's limits on
   (300 API requests per rolling 5 s, answered 429 beyond that).
2. N messages are sent into it (limits off for this set-up step) and stored; no callback ever
   arrives, so every one of them is stuck at `queued`. Their last change is moved an hour back.
3. The sweeper (the class `serve` and `worker` run) looks them all up with Get Message, through
   the same request budget, and applies what Plivo says.

Printed: the time it took, the mean request rate, the most requests seen in any 5 s window
(must be ≤ 300), how many 429s the simulator answered (must be 0), the time the limit allows
at best (a full bucket of 300, then 60/s), and the same-run baseline: the HTTP client alone
doing the same Get Message calls with no budget (the simulator's limit off).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import partial

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from plivo_tracker.db.engine import make_engine, make_writer
from plivo_tracker.db.migrate import upgrade
from plivo_tracker.logging import configure_logging
from plivo_tracker.messages.models import messages
from plivo_tracker.outbound.budget import Budget, Limits
from plivo_tracker.outbound.dispatcher import Dispatcher
from plivo_tracker.outbound.outbox import SendRequest, submit, validate
from plivo_tracker.outbound.sweeper import Sweeper
from plivo_tracker.plivo.client import (
    DEFAULT_POOL,
    DEFAULT_TIMEOUT,
    AiohttpTransport,
    PlivoClient,
    RawResponse,
    request_headers,
)
from sends import AUTH_ID, TOKEN, start_simulator
from sends import _free_port as free_port

API_PER_5S = 300


class Recording(AiohttpTransport):
    """Real HTTP (the client's own transport), with the time of every request."""

    def __init__(self, base: str) -> None:
        super().__init__(base, request_headers(AUTH_ID, TOKEN), DEFAULT_TIMEOUT, DEFAULT_POOL)
        self.stamps: list[float] = []

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: bytes | None = None,
    ) -> RawResponse:
        self.stamps.append(time.monotonic())
        return await super().request(method, path, params=params, body=body)


def busiest_window(stamps: list[float], seconds: float = 5.0) -> int:
    """The most requests in any window of `seconds` (rolling, as Plivo counts)."""
    ordered = sorted(stamps)
    return max(
        (bisect.bisect_right(ordered, t + seconds - 1e-9) - i for i, t in enumerate(ordered)),
        default=0,
    )


def set_limits(base: str, api_per_5s: int) -> None:
    resp = httpx.put(f"{base}/_simulator/faults", json={"api_per_5s": api_per_5s}, timeout=5)
    resp.raise_for_status()


def simulator_stats(base: str) -> dict[str, int]:
    stats: dict[str, int] = httpx.get(f"{base}/_simulator/stats", timeout=5).json()
    return stats


async def run(base: str, database: str | None, n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        url = database or f"sqlite+aiosqlite:///{tmp}/reconcile.db"
        engine = make_engine(url)
        await upgrade(engine)
        writer = make_writer(engine)
        # Set-up: send N messages (no budget), so that Plivo (the simulator) has them.
        setup = PlivoClient(base, AUTH_ID, TOKEN)
        sender = Dispatcher(
            writer,
            setup,
            callback_url="http://127.0.0.1:9/plivo/callback",
            mps=None,
            shared_bucket=False,
            limits=Limits(mps=None, api_per_5s=0, list_per_minute=0),
        )
        to = [f"+1415{300 + i // 10_000:03d}{i % 10_000:04d}" for i in range(n)]
        now = datetime.now(UTC)
        for start in range(0, n, 1000):
            valid = validate(SendRequest(to=to[start : start + 1000], text="bench"), "14155550100")
            await writer.run(partial(submit, v=valid, now=now, idempotency=None))
        while await sender.run_once():
            pass
        await setup.aclose()
        hour_ago = now - timedelta(hours=1)
        async with engine.begin() as conn:
            await conn.execute(update(messages).values(updated_at=hour_ago))

        # The measurement: Plivo's limits on, the sweeper's own budget, after a quiet window
        # (the set-up's sends would otherwise count against the first 5 s).
        await asyncio.sleep(5.5)
        set_limits(base, API_PER_5S)
        before = await asyncio.to_thread(simulator_stats, base)
        transport = Recording(base)
        client = PlivoClient(base, AUTH_ID, TOKEN, transport=transport)
        budget = Budget(writer, Limits(mps=None, api_per_5s=API_PER_5S), shared=False)
        sweeper = Sweeper(
            writer, client, budget, stuck_after=1800, no_receipt_after=21600, interval=60, batch=n
        )
        started = time.perf_counter()
        result = await sweeper.run_once()
        elapsed = time.perf_counter() - started
        after = await asyncio.to_thread(simulator_stats, base)
        await client.aclose()

        # Same-run baseline: the client alone, no budget, the simulator's limit off.
        set_limits(base, 0)
        baseline_client = PlivoClient(base, AUTH_ID, TOKEN)
        uuids = await _uuids(engine)
        t0 = time.perf_counter()
        for uuid in uuids:
            await baseline_client.get_message(uuid)
        baseline = time.perf_counter() - t0
        await baseline_client.aclose()
        await writer.close()
        await engine.dispose()
    allowed = n / (API_PER_5S / 5.0)
    return {
        "looked_up": float(result.looked_up),
        "errors": float(result.errors),
        "elapsed": elapsed,
        "rate": len(transport.stamps) / elapsed,
        "busiest_5s": float(busiest_window(transport.stamps)),
        "rate_limited": float(after["rate_limited"] - before["rate_limited"]),
        "allowed": allowed,
        "baseline": baseline,
    }


async def _uuids(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(messages.c.message_uuid))
        return [u for u in rows.scalars() if u]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--database", default=None, help="default: a fresh SQLite file")
    args = parser.parse_args()
    configure_logging("console", "warning")
    port = free_port()
    sim = start_simulator(port)
    base = f"http://127.0.0.1:{port}"
    try:
        r = asyncio.run(run(base, args.database, args.messages))
    finally:
        sim.terminate()
        sim.wait(timeout=30)
    print(
        f"swept {r['looked_up']:,.0f} stuck messages ({r['errors']:.0f} errors) in "
        f"{r['elapsed']:.1f} s: {r['rate']:.1f} requests/s on average"
    )
    print(
        f"busiest rolling 5 s: {r['busiest_5s']:.0f} requests (limit {API_PER_5S}); "
        f"429 answers: {r['rate_limited']:.0f}"
    )
    print(f"the limit allows it in about {r['allowed']:.1f} s at best (300 per 5 s = 60/s)")
    print(f"baseline, the client alone with no budget: {r['baseline']:.1f} s")


if __name__ == "__main__":
    main()
