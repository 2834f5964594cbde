"""Which side limits sending: the HTTP client or the simulator? Both measured in one run.

    .venv/bin/python bench/http_clients.py [--requests 4000] [--concurrency 4,16,64]
                                           [--wrk-seconds 5] [--rounds 2]

1. `plivo-tracker simulate --no-callbacks` runs as its own process, Plivo's API limits off.
2. The simulator's ceiling: wrk (C, one thread, so the load costs little CPU) POSTs Plivo's Send
   Message request for a few seconds with N connections: requests/s and the simulator's CPU
   per request.
3. The clients, in this process, one after the other and alternating for `--rounds`: for each
   concurrency C, `httpx.AsyncClient` and `aiohttp.ClientSession`, each with a bounded keep-alive
   pool of C connections and C requests in flight, POST the same request (same JSON body, Basic
   auth, Accept) `--requests` times. Printed: sends/s, this process's CPU per request (the
   client's cost: the simulator is another process) and the simulator's CPU per request.
4. The project's `PlivoClient` (whatever it is built on) the same way, for reference.

A client is the bottleneck when its rate is well under the simulator's ceiling at the same
concurrency while this process's CPU per request is the larger of the two.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx

from plivo_tracker.logging import configure_logging
from plivo_tracker.plivo.client import PlivoClient
from sends import AUTH_ID, TOKEN, start_simulator
from sends import _free_port as free_port

BODY = {
    "dst": "14155550101",
    "type": "sms",
    "method": "POST",
    "log": "true",
    "src": "14155550100",
    "text": "bench",
    "url": "http://127.0.0.1:9/plivo/callback",
}
PATH = f"/v1/Account/{AUTH_ID}/Message/"
HEADERS = {"Accept": "application/json", "User-Agent": "plivo-tracker"}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Measure:
    """Wall time, this process's CPU and the simulator's CPU around one measured run."""

    def __init__(self, sim_pid: int) -> None:
        self.sim_pid = sim_pid

    async def run(self, n: int, body: Callable[[], Awaitable[None]]) -> dict[str, float]:
        sim0, cpu0, t0 = cpu_seconds(self.sim_pid), time.process_time(), time.perf_counter()
        await body()
        elapsed = time.perf_counter() - t0
        cpu, sim = time.process_time() - cpu0, cpu_seconds(self.sim_pid) - sim0
        return {
            "rate": n / elapsed,
            "client_us": cpu / n * 1e6,
            "sim_us": sim / n * 1e6,
        }


async def _fan_out(n: int, concurrency: int, one: Callable[[], Awaitable[None]]) -> None:
    """`n` calls of `one`, `concurrency` at a time (workers, no task per request)."""
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await one()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def bench_httpx(base: str, n: int, concurrency: int, measure: Measure) -> dict[str, float]:
    client = httpx.AsyncClient(
        base_url=base,
        auth=(AUTH_ID, TOKEN),
        headers=HEADERS,
        timeout=httpx.Timeout(10.0, connect=3.0),
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
    )

    async def one() -> None:
        resp = await client.post(PATH, json=BODY)
        if resp.status_code != 202 or not resp.json().get("message_uuid"):
            raise SystemExit(f"httpx: unexpected answer {resp.status_code} {resp.text[:100]}")

    try:
        await _fan_out(50, concurrency, one)  # warm the pool
        return await measure.run(n, lambda: _fan_out(n, concurrency, one))
    finally:
        await client.aclose()


async def bench_aiohttp(base: str, n: int, concurrency: int, measure: Measure) -> dict[str, float]:
    basic = base64.b64encode(f"{AUTH_ID}:{TOKEN}".encode()).decode()
    session = aiohttp.ClientSession(
        base_url=base,
        headers={**HEADERS, "Authorization": f"Basic {basic}"},
        timeout=aiohttp.ClientTimeout(total=10.0, connect=3.0),
        connector=aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency),
    )

    async def one() -> None:
        async with session.post(PATH, json=BODY) as resp:
            data = await resp.json(content_type=None)
            if resp.status != 202 or not data.get("message_uuid"):
                raise SystemExit(f"aiohttp: unexpected answer {resp.status} {data}")

    try:
        await _fan_out(50, concurrency, one)
        return await measure.run(n, lambda: _fan_out(n, concurrency, one))
    finally:
        await session.close()


async def bench_plivo_client(
    base: str, n: int, concurrency: int, measure: Measure
) -> dict[str, float]:
    client = PlivoClient(base, AUTH_ID, TOKEN, pool=concurrency)

    async def one() -> None:
        await client.send(src=BODY["src"], dst=BODY["dst"], text=BODY["text"], url=BODY["url"])

    try:
        await _fan_out(50, concurrency, one)
        return await measure.run(n, lambda: _fan_out(n, concurrency, one))
    finally:
        await client.aclose()


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '@BODY@'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
wrk.headers["Authorization"] = "Basic @AUTH@"
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d\\n", summary.requests, summary.duration,
    summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout))
end
"""


def simulator_ceiling(
    base: str, connections: int, seconds: float, sim_pid: int
) -> dict[str, float] | None:
    """wrk against the Message API: the most the simulator answers with `connections`."""
    if shutil.which("wrk") is None:
        return None
    auth = base64.b64encode(f"{AUTH_ID}:{TOKEN}".encode()).decode()
    script = WRK_SCRIPT.replace("@BODY@", json.dumps(BODY)).replace("@AUTH@", auth)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        sim0 = cpu_seconds(sim_pid)
        done = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{seconds:g}s",
                "--timeout",
                "10s",
                "-s",
                f.name,
                base + PATH,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        sim = cpu_seconds(sim_pid) - sim0
    finally:
        os.unlink(f.name)
    [line] = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    requests, duration_us, errors = (int(x) for x in line.split()[1:])
    return {
        "rate": requests / (duration_us / 1e6),
        "sim_us": sim / requests * 1e6,
        "errors": float(errors),
    }


async def main_async(args: argparse.Namespace, base: str, sim_pid: int) -> None:
    measure = Measure(sim_pid)
    levels = [int(c) for c in args.concurrency.split(",")]
    for c in levels:
        ceiling = simulator_ceiling(base, c, args.wrk_seconds, sim_pid)
        if ceiling is None:
            print("wrk not found: no simulator ceiling (apt-get install -y wrk)")
            break
        print(
            f"simulator ceiling, wrk -t1 -c{c}: {ceiling['rate']:,.0f} req/s, "
            f"simulator CPU {ceiling['sim_us']:.0f} µs/request, {ceiling['errors']:.0f} errors"
        )
    if args.ceiling_only:
        return
    clients = {
        "httpx.AsyncClient": bench_httpx,
        "aiohttp.ClientSession": bench_aiohttp,
        "PlivoClient": bench_plivo_client,
    }
    for c in levels:
        for r in range(args.rounds):
            for name, fn in clients.items():
                res = await fn(base, args.requests, c, measure)
                print(
                    f"C={c:<3} round {r + 1}  {name:<22} {res['rate']:7,.0f} sends/s  "
                    f"client CPU {res['client_us']:5.0f} µs/req  "
                    f"simulator CPU {res['sim_us']:4.0f} µs/req"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", default="4,16,64")
    parser.add_argument("--wrk-seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ceiling-only", action="store_true", help="only the wrk runs")
    args = parser.parse_args()
    configure_logging("console", "warning")
    port = free_port()
    sim = start_simulator(port)
    try:
        asyncio.run(main_async(args, f"http://127.0.0.1:{port}", sim.pid))
    finally:
        sim.terminate()
        sim.wait(timeout=30)


if __name__ == "__main__":
    main()
