"""Live stream latency: commit → WebSocket frame at 1,000 changes/s, 20 clients, with a baseline.

    python bench/live.py                        # SQLite in a temp dir, 2 s warm-up + 20 s
    python bench/live.py --database-url postgresql+asyncpg://127.0.0.1:5432/plivo_bench_live
    python bench/live.py --duration 30 --rate 1000 --clients 20 --connections 64
    python bench/live.py --write docs/benchmarks.md       # append a dated section
    python bench/live.py --profile                        # py-spy the server during the window

Three processes per target, so the load and the clients do not run on the server's event loop:

1. the server, `bench/live_server.py`: `plivo-tracker serve` (same app, same uvicorn options)
   with a wrapper around the projector's pass that records `(event id, time.time())` for every
   status change the pass wrote, right after its COMMIT (a callback's 200 only appends it to
   the journal; the projector applies it to `status_events`, docs/adr/0011), and a timer on
   `LiveHub.publish`;
2. the clients: one process with N WebSocket clients (`websockets`, asyncio API, default
   options: permessage-deflate offered as browsers do; `--no-deflate` turns it off) on `WS /ws`,
   recording `(event id, time.time())` when each status frame is delivered to the application;
3. the load: one process sending pre-signed callbacks (V2 + V3 over PUBLIC_BASE_URL, the
   service's own signing code) over keep-alive HTTP/1.1 from raw asyncio streams, open loop:
   request i is due at t0 + i/rate and goes out then on any idle connection of a pool of
   --connections (64), like Plivo's many concurrent senders. Each 200 waits for a durable group
   commit (20-60 ms under this load), so at 1,000/s dozens of callbacks are in flight at once: a
   closed loop over 8 connections only offered ~330-550/s, 32 connections ~800/s. A request
   is late only when every connection is busy (or the generator was starved of CPU).
   Each message gets queued (Sequence 1), sent (2), delivered (3), in blocks of 500 messages so
   one message's callbacks are 0.5 s apart: every request is exactly one status change.

The baseline runs first, in the same invocation, with the same load and clients processes and
options: `bench/live_server.py baseline`, a raw ASGI app on the same uvicorn options with no
database and no hub, which answers each callback 200 at once and broadcasts a frame of the
same shape (id, MessageUUID, Status from the form) to every client through a per-client queue.
Its "commit" time is when it handled the request. It is the floor of HTTP + WebSocket transport
on this machine under the same load and the same CPU contention.

The first --warmup seconds (2) are excluded; the window is the next --duration seconds (20) of
commit times. What each number means:

- changes/s: status changes committed in the window / window length (the achieved rate).
- requests/s sent; lateness: callbacks sent in the window / its length (each one is a change);
  how far behind its schedule the load generator sent (p99 / max; a busy connection).
- commit → frame: client receive time − server commit time over every (client, change) pair
  in the window: p50 / p90 / p99 / max. Target p99 ≤ 50 ms. For serve the commit is that of
  the projector pass that wrote the change (its 200 came earlier, when the callback was
  appended to the journal); the time from the 200 is "ack → frame".
- ack → frame: client receive time − when the load generator had read that callback's 200
  (negative when the frame came first).
- commit → hub publish (serve only): when the hub handed the change to the subscriber queues
  − its commit, i.e. the wake-up and the hub's database read.
- hub publish → frame: the rest: per-client queue, send task, socket, the client's own loop.
- frames per client / changes: status frames each client got over the whole run (warm-up
  included) vs changes committed: they must be equal.
- missing / extra or out of order: (client, change) pairs never received; frames with an id
  never committed, duplicates, or ids not above the previous one. Both must be 0.
- dropped clients: connections closed with 4408 (queue overflow) / closed otherwise.
- non-200: callbacks not answered 200 (must be 0).
- CPU: each process's CPU time over the window as % of one core; "others" is whatever else
  ran on the machine meanwhile (2 cores = 200 %); on PostgreSQL, "postgres" is the backends
  connected to the benchmark's database plus the WAL writer. The clients and the load share
  the server's machine: on 2 cores the three processes compete, in the baseline too. A
  warning is printed when others took more than 30 %: such a run measures the neighbours.
- server CPU per change: server CPU time in the window / changes committed in it (HTTP,
  verification, commit, hub, and 20 frames). Noise moves it little, but load does: bigger
  batches and bursts at higher rates make each change cheaper.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import pickle
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from callbacks import (
    API_HEADERS,
    Proc,
    append_section,
    bucket_quantile,
    cpu_seconds,
    free_port,
    git_commit,
    is_postgres,
    load_average,
    machine,
    prepare_database,
    server_env,
    start_profiler,
)
from plivo_tracker.plivo.signature import signed_headers

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
CALLBACK_PATH = "/plivo/callback"
PUBLIC_BASE_URL = "https://hooks.bench.example"  # only ever used to sign and verify
AUTH_ID = "MABENCHXXXXXXXXXXXXX"
TARGET_P99_MS = 50.0
BLOCK = 500  # messages per block: a message's queued, sent and delivered are BLOCK requests apart
OURS = ("server", "clients", "load", "postgres")  # CPU rows; the rest of the machine is "others"
SETTLE = 3.0  # seconds after the last 200 before the clients stop


# ---- load process ------------------------------------------------------------------------


def write(path: str, data: bytes) -> None:
    """Small files the orchestrator waits for or reads afterwards (blocking is fine here)."""
    Path(path).write_bytes(data)


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def exchange(conn: Conn, request: bytes) -> int:
    """Send one pre-built HTTP/1.1 request on a keep-alive connection and read its whole
    response; returns the status code (plain sockets: an HTTP client would cost more than the
    server under test)."""
    reader, writer = conn
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return int(head[9:12])


def build_requests(n: int, token: str, host: str) -> tuple[list[bytes], list[tuple[str, str]]]:
    """N raw HTTP/1.1 requests, each one status change, and their (MessageUUID, Status)."""
    url = PUBLIC_BASE_URL + CALLBACK_PATH
    run = f"{random.SystemRandom().randrange(10**8):08d}"
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    reqs: list[bytes] = []
    keys: list[tuple[str, str]] = []
    while len(reqs) < n:
        block = [str(uuid.uuid4()) for _ in range(BLOCK)]
        for seq, status in enumerate(("queued", "sent", "delivered"), start=1):
            for m in block:
                fields = {
                    "MessageUUID": m,
                    "Status": status,
                    "To": "14155550101",
                    "From": "14155550100",
                    "Type": "sms",
                    "Units": "1",
                    "TotalRate": "0.00500",
                    "TotalAmount": "0.00500",
                    "MCC": "310",
                    "MNC": "004",
                    "ParentMessageUUID": m,
                    "PartInfo": "",
                    "PowerpackUUID": "",
                    "ErrorCode": "",
                    "MessageTime": stamp,
                    "Sequence": str(seq),
                }
                nonce = f"{run}{len(reqs):012d}"
                signed = signed_headers(
                    "POST", url, {k: [v] for k, v in fields.items()}, token, nonce
                )
                body = urlencode(fields).encode()
                head = [
                    f"POST {CALLBACK_PATH} HTTP/1.1",
                    f"Host: {host}",
                    "Content-Type: application/x-www-form-urlencoded",
                    "User-Agent: PlivoHTTP/1.0 (bench)",
                    *(f"{k}: {v}" for k, v in signed.items()),
                    f"Content-Length: {len(body)}",
                    "",
                    "",
                ]
                reqs.append("\r\n".join(head).encode() + body)
                keys.append((m, status))
    return reqs[:n], keys[:n]


async def _load(args: argparse.Namespace) -> None:
    host = f"127.0.0.1:{args.port}"
    n = args.rate * (args.warmup + args.duration)
    reqs, keys = build_requests(n, args.token, host)
    conns = [await asyncio.open_connection("127.0.0.1", args.port) for _ in range(args.connections)]
    start = time.monotonic() + 0.5
    t0 = time.time() + (start - time.monotonic())
    write(args.t0_file, json.dumps({"t0": t0}).encode())
    sent = array("d", bytes(8 * n))  # wall time each request was written
    acked = array("d", bytes(8 * n))  # wall time its whole response was read
    late = array("d", bytes(8 * n))  # seconds behind schedule
    statuses: dict[int, int] = {}
    cpu: list[float] = []

    def sample_cpu() -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu.append(usage.ru_utime + usage.ru_stime)

    loop = asyncio.get_running_loop()
    offset = loop.time() - time.monotonic()
    loop.call_at(start + offset + args.warmup, sample_cpu)
    loop.call_at(start + offset + args.warmup + args.duration, sample_cpu)

    idle: asyncio.Queue[Conn] = asyncio.Queue()
    for conn in conns:
        idle.put_nowait(conn)
    in_flight_max = 0

    async def request(i: int, conn: Conn) -> None:
        code = await exchange(conn, reqs[i])
        acked[i] = time.time()
        statuses[code] = statuses.get(code, 0) + 1
        idle.put_nowait(conn)

    # Open loop: request i goes out at its due time on any idle connection, whatever the others
    # are waiting for; it is late only when all connections are busy (or this loop was starved).
    tasks: set[asyncio.Task[None]] = set()
    for i in range(n):
        due = start + i / args.rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        conn = await idle.get()
        in_flight_max = max(in_flight_max, len(conns) - idle.qsize())
        late[i] = max(0.0, time.monotonic() - due)
        sent[i] = time.time()
        task = asyncio.create_task(request(i, conn))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    for _, writer in conns:
        writer.close()
    if len(cpu) < 2:
        sample_cpu()
    result = {
        "t0": t0,
        "sent": sent,
        "acked": acked,
        "late": late,
        "keys": keys,
        "statuses": statuses,
        "cpu": cpu[-1] - cpu[0] if len(cpu) >= 2 else 0.0,
        "in_flight_max": in_flight_max,
    }
    write(args.out, pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))


def load_main(argv: list[str]) -> None:
    import uvloop

    p = argparse.ArgumentParser(prog="live.py load")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--rate", type=int, required=True)
    p.add_argument("--connections", type=int, required=True)
    p.add_argument("--warmup", type=int, required=True)
    p.add_argument("--duration", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--t0-file", required=True)
    uvloop.run(_load(p.parse_args(argv)))


# ---- clients process ---------------------------------------------------------------------


async def _clients(args: argparse.Namespace) -> None:
    from websockets.asyncio.client import ClientConnection, connect
    from websockets.exceptions import ConnectionClosed

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    n = args.clients
    ids = [array("q") for _ in range(n)]
    times = [array("d") for _ in range(n)]
    closes: list[int | None] = [None] * n
    errors: list[str] = []
    sockets: list[ClientConnection] = []
    ready = 0

    async def client(k: int) -> None:
        nonlocal ready
        got_id, got_t = ids[k].append, times[k].append
        clock = time.time
        try:
            async with connect(
                args.url,
                # WS /ws needs the key (the baseline ignores it); sent with the handshake, so
                # no auth frame adds a round trip to the connect.
                additional_headers=API_HEADERS,
                compression="deflate" if args.deflate else None,
                ping_interval=None,
                open_timeout=30,
                max_size=None,
            ) as ws:
                sockets.append(ws)
                async for text in ws:
                    now = clock()
                    assert isinstance(text, str)  # the server sends text frames only
                    # Status frames start with their id ({"id":N,"type":"status",...}): no JSON
                    # parse per frame here, so the clients cost as little CPU as possible.
                    if text[:6] == '{"id":':
                        got_id(int(text[6 : text.index(",", 6)]))
                        got_t(now)
                        continue
                    frame = json.loads(text)
                    if frame.get("type") == "ready":
                        ready += 1
                        if ready == n:
                            write(args.ready_file, b"ready")
                    elif frame.get("type") == "error":
                        errors.append(f"client {k}: {frame}")
                closes[k] = ws.close_code
        except ConnectionClosed as exc:
            closes[k] = exc.rcvd.code if exc.rcvd is not None else -1
        except OSError as exc:
            errors.append(f"client {k}: {exc!r}")

    tasks = [asyncio.create_task(client(k)) for k in range(n)]
    await stop.wait()
    for ws in sockets:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 2)
    await asyncio.wait(tasks, timeout=5)
    out = {"ids": ids, "times": times, "closes": closes, "errors": errors}
    write(args.out, pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL))


def clients_main(argv: list[str]) -> None:
    import uvloop

    p = argparse.ArgumentParser(prog="live.py clients")
    p.add_argument("--url", required=True)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--ready-file", required=True)
    p.add_argument("--deflate", action=argparse.BooleanOptionalAction, default=True)
    uvloop.run(_clients(p.parse_args(argv)))


# ---- orchestration -----------------------------------------------------------------------


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    idle = ticks[3] + ticks[4]
    return (sum(ticks[:8]) - idle) / hz, sum(ticks[:8]) / hz


def wait_file(path: Path, procs: list[Proc], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        for p in procs:
            if p.proc.poll() is not None:
                raise SystemExit(f"process exited ({p.proc.returncode}); see {p.log_path}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{path.name} did not appear within {timeout:.0f}s")
        time.sleep(0.05)


def sleep_until(wall: float) -> None:
    delay = wall - time.time()
    if delay > 0:
        time.sleep(delay)


@dataclass
class Target:
    name: str  # "baseline" or "serve"
    server: dict[str, Any] = field(default_factory=dict)
    clients: dict[str, Any] = field(default_factory=dict)
    load: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # seconds over the window
    notes: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


def run_target(
    name: str, args: argparse.Namespace, env: dict[str, str], work: Path, label: str
) -> Target:
    t = Target(name)
    d = work / name
    d.mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    py = sys.executable
    server = Proc(
        [py, str(BENCH / "live_server.py"), name, "--port", str(port), "--out", str(d / "server")],
        env,
        work,
        d / "server.log",
    )
    clients: Proc | None = None
    load: Proc | None = None
    profiler: subprocess.Popen[bytes] | None = None
    try:
        server.wait_http(base + ("/ready" if name == "serve" else "/health"))
        clients = Proc(
            [
                py,
                str(BENCH / "live.py"),
                "clients",
                "--url",
                f"ws://127.0.0.1:{port}/ws",
                "--clients",
                str(args.clients),
                "--out",
                str(d / "clients"),
                "--ready-file",
                str(d / "clients.ready"),
                "--deflate" if args.deflate else "--no-deflate",
            ],
            env,
            work,
            d / "clients.log",
        )
        wait_file(d / "clients.ready", [server, clients], 60)
        load = Proc(
            [
                py,
                str(BENCH / "live.py"),
                "load",
                "--port",
                str(port),
                "--token",
                env["PLIVO_AUTH_TOKEN"],
                "--rate",
                str(args.rate),
                "--connections",
                str(args.connections),
                "--warmup",
                str(args.warmup),
                "--duration",
                str(args.duration),
                "--out",
                str(d / "load"),
                "--t0-file",
                str(d / "load.t0"),
            ],
            env,
            work,
            d / "load.log",
        )
        wait_file(d / "load.t0", [server, clients, load], 120)
        t0 = json.loads((d / "load.t0").read_text())["t0"]
        print(f"  {label}: load running, window starts in {t0 + args.warmup - time.time():.1f}s")
        sleep_until(t0 + args.warmup)
        pids = {"server": server.proc.pid, "clients": clients.proc.pid}
        before = {k: cpu_seconds(pid) for k, pid in pids.items()}
        pg_before = postgres_cpu() if args.postgres and name == "serve" else {}
        busy0, total0 = machine_cpu()
        if args.profile and name == "serve":
            profiler = start_profiler(server.proc.pid, args.duration, work / "py-spy")
        sleep_until(t0 + args.warmup + args.duration)
        t.cpu = {k: cpu_seconds(pid) - before[k] for k, pid in pids.items()}
        if pg_before:
            ours = asyncio.run(postgres_backends(env["DATABASE_URL"]))
            after = postgres_cpu()
            t.cpu["postgres"] = sum(after[p] - pg_before.get(p, 0.0) for p in ours if p in after)
        busy1, total1 = machine_cpu()
        t.cpu["machine busy"] = busy1 - busy0
        t.cpu["machine total"] = total1 - total0
        if load.proc.wait(timeout=args.warmup + args.duration + 120) != 0:
            raise SystemExit(f"load generator failed; see {load.log_path}")
        time.sleep(SETTLE)
        if name == "serve":
            t.metrics = scrape_live(base)
            if not t.metrics:
                t.notes.append("could not read the service's /metrics: no server counters")
        if profiler is not None:
            profiler.wait(timeout=60)
    finally:
        for proc in (load, clients):
            if proc is not None:
                proc.stop()
        code = server.stop()
    if code not in (0, -signal.SIGTERM):
        t.notes.append(f"{name} server exited with {code} after SIGTERM; see {server.log_path}")
    t.server = pickle.loads((d / "server").read_bytes())
    t.clients = pickle.loads((d / "clients").read_bytes())
    t.load = pickle.loads((d / "load").read_bytes())
    t.cpu["load"] = t.load["cpu"]
    t.notes.extend(log_problems(d / "server.log", name))
    t.notes.extend(log_problems(d / "clients.log", name + " clients"))
    t.notes.extend(t.clients["errors"][:5])
    return t


def postgres_cpu() -> dict[int, float]:
    """CPU seconds of every process named postgres (the server's backends and workers)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    out[int(entry.name)] = cpu_seconds(int(entry.name))
    return out


async def postgres_backends(url: str) -> set[int]:
    """Pids of the backends connected to the benchmark's database, plus the WAL writer."""
    import asyncpg

    dsn = "postgresql://" + url.split("://", 1)[1]
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() OR backend_type = 'walwriter'"
        )
    finally:
        await conn.close()
    return {int(r["pid"]) for r in rows}


def scrape_live(base: str) -> dict[str, float]:
    wanted = (
        "plivo_tracker_live_",
        "plivo_tracker_commit_batch_size_",
        "plivo_tracker_commit_sec",
        "plivo_tracker_projected_total",
        "plivo_tracker_projection_",
    )
    out: dict[str, float] = {}
    try:
        resp = httpx.get(base + "/metrics", headers=API_HEADERS, timeout=10)
        resp.raise_for_status()
    except httpx.HTTPError:
        return out
    for line in resp.text.splitlines():
        if line.startswith(wanted):
            name, _, value = line.rpartition(" ")
            out[name] = out.get(name, 0.0) + float(value)
    return out


def log_problems(path: Path, who: str) -> list[str]:
    keys = ('"level": "warning"', '"level": "error"', '"level": "critical"', "Traceback", "ERROR")
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    bad = [line for line in lines if any(k in line for k in keys)]
    return [f"{who} log: {len(bad)} warning/error lines, first: {bad[0][:200]}"] if bad else []


# ---- analysis ----------------------------------------------------------------------------


def pct(sorted_xs: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (nan when empty)."""
    if not sorted_xs:
        return math.nan
    return sorted_xs[min(len(sorted_xs) - 1, max(0, math.ceil(p / 100 * len(sorted_xs)) - 1))]


@dataclass
class Summary:
    window: float
    changes_total: int
    changes_window: int
    requests_window: int
    non_200: int
    late_p99: float
    late_max: float
    in_flight_max: int
    commit_frame: list[float]  # seconds, sorted
    ack_frame: list[float]
    commit_publish: list[float]
    publish_frame: list[float]
    frames_min: int
    frames_max: int
    missing: int
    extra: int
    out_of_order: int
    dropped: int
    ended: int
    cpu: dict[str, float]


def summarise(t: Target, args: argparse.Namespace) -> Summary:
    t0 = t.load["t0"]
    w0, w1 = t0 + args.warmup, t0 + args.warmup + args.duration
    commits = t.server["commits"]
    commit_t = {eid: at for eid, _, _, at in commits}
    window = [eid for eid, _, _, at in commits if w0 <= at < w1]
    key_of = {eid: (m, s) for eid, m, s, _ in commits}
    published = dict(t.server["published"])
    acked = t.load["acked"]
    ack_t = {key: acked[i] for i, key in enumerate(t.load["keys"])}

    commit_frame: list[float] = []
    ack_frame: list[float] = []
    publish_frame: list[float] = []
    frames: list[int] = []
    missing = extra = out_of_order = 0
    for ids, times in zip(t.clients["ids"], t.clients["times"], strict=True):
        recv = dict(zip(ids, times, strict=True))
        frames.append(len(ids))
        missing += sum(1 for eid in commit_t if eid not in recv)
        extra += sum(1 for eid in recv if eid not in commit_t) + len(ids) - len(recv)
        out_of_order += sum(1 for a, b in zip(ids, ids[1:], strict=False) if b <= a)
        for eid in window:
            at = recv.get(eid)
            if at is None:
                continue
            commit_frame.append(at - commit_t[eid])
            if key_of[eid] in ack_t:
                ack_frame.append(at - ack_t[key_of[eid]])
            if eid in published:
                publish_frame.append(at - published[eid])
    commit_publish = [published[e] - commit_t[e] for e in window if e in published]
    sent = t.load["sent"]
    late = sorted(t.load["late"])
    closes = t.clients["closes"]
    return Summary(
        window=w1 - w0,
        changes_total=len(commits),
        changes_window=len(window),
        requests_window=sum(1 for s in sent if w0 <= s < w1),
        non_200=sum(v for k, v in t.load["statuses"].items() if k != 200),
        late_p99=pct(late, 99),
        late_max=late[-1] if late else math.nan,
        in_flight_max=t.load["in_flight_max"],
        commit_frame=sorted(commit_frame),
        ack_frame=sorted(ack_frame),
        commit_publish=sorted(commit_publish),
        publish_frame=sorted(publish_frame),
        frames_min=min(frames, default=0),
        frames_max=max(frames, default=0),
        missing=missing,
        extra=extra + out_of_order,
        out_of_order=out_of_order,
        dropped=sum(1 for c in closes if c == 4408),
        ended=sum(1 for c in closes if c is not None and c not in (1000, 4408)),
        cpu=t.cpu,
    )


def ms(seconds: float) -> str:
    return "—" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


def _ok(good: bool) -> str:
    return "✓" if good else "✗"


def table(base: Summary, serve: Summary, label: str, args: argparse.Namespace) -> str:
    def lat(s: Summary, xs: list[float]) -> str:
        if not xs:
            return "—"
        return (
            " / ".join(f"{pct(xs, p) * 1000:.1f}" for p in (50, 90, 99)) + f" / {xs[-1] * 1000:.0f}"
        )

    def cpu(s: Summary) -> str:
        c = s.cpu
        span = c.get("machine total", 0) / (os.cpu_count() or 1) or s.window
        others = c.get("machine busy", 0) - sum(c.get(k, 0) for k in OURS)
        pg = f"postgres {c['postgres'] / span:.0%}, " if "postgres" in c else ""
        return (
            f"server {c['server'] / span:.0%}, clients {c['clients'] / span:.0%}, "
            f"load {c['load'] / span:.0%}, {pg}others {max(0.0, others) / span:.0%}"
        )

    def per_change(s: Summary) -> str:
        return f"{s.cpu['server'] / max(1, s.changes_window) * 1000:.2f} ms"

    def sent(s: Summary) -> str:
        rate = s.requests_window / s.window
        return f"{rate:,.0f}; {ms(s.late_p99)} / {ms(s.late_max)}; {s.in_flight_max}"

    p99 = pct(serve.commit_frame, 99) * 1000
    rows = [
        ("", "baseline (no DB, no hub)", f"plivo-tracker serve ({label})", "target"),
        (
            "changes/s (in window)",
            f"{base.changes_window / base.window:,.0f}",
            f"{serve.changes_window / serve.window:,.0f}",
            f"{args.rate:,}",
        ),
        (
            "requests/s sent; late p99 / max; in flight max",
            sent(base),
            sent(serve),
            "",
        ),
        (
            "commit → frame p50 / p90 / p99 / max (ms)",
            lat(base, base.commit_frame),
            lat(serve, serve.commit_frame),
            f"p99 ≤ {TARGET_P99_MS:.0f} ms {_ok(p99 <= TARGET_P99_MS)}",
        ),
        (
            "ack → frame p50 / p90 / p99 / max (ms)",
            lat(base, base.ack_frame),
            lat(serve, serve.ack_frame),
            "",
        ),
        ("commit → hub publish (ms)", "", lat(serve, serve.commit_publish), ""),
        ("hub publish → frame (ms)", "", lat(serve, serve.publish_frame), ""),
        (
            "frames per client / changes",
            f"{base.frames_min:,}–{base.frames_max:,} / {base.changes_total:,}",
            f"{serve.frames_min:,}–{serve.frames_max:,} / {serve.changes_total:,}",
            "equal",
        ),
        (
            "missing / extra or out of order",
            f"{base.missing} / {base.extra}",
            f"{serve.missing} / {serve.extra}",
            f"0 / 0 {_ok(serve.missing == 0 and serve.extra == 0)}",
        ),
        (
            "dropped clients (4408) / other closes",
            f"{base.dropped} / {base.ended}",
            f"{serve.dropped} / {serve.ended}",
            f"0 {_ok(serve.dropped == 0 and serve.ended == 0)}",
        ),
        ("non-200", str(base.non_200), str(serve.non_200), "0"),
        ("CPU (% of one core)", cpu(base), cpu(serve), ""),
        ("server CPU per change", per_change(base), per_change(serve), ""),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for n, r in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def details(serve: Target, base: Target) -> list[str]:
    out = []
    m = serve.metrics
    batches = m.get("plivo_tracker_commit_batch_size_count", 0)
    if batches:
        out.append(
            f"serve: {int(batches):,} group commits of "
            f"{m.get('plivo_tracker_commit_batch_size_sum', 0) / batches:.1f} callbacks on average,"
            " "
            f"{m.get('plivo_tracker_commit_seconds_sum', 0) / batches * 1000:.1f} ms per commit"
        )
    passes = m.get("plivo_tracker_projection_seconds_count", 0)
    if passes:
        lag_p99 = bucket_quantile(m, "plivo_tracker_projection_lag_seconds", 0.99)
        lag_n = m.get("plivo_tracker_projection_lag_seconds_count", 0)
        lag_mean = m.get("plivo_tracker_projection_lag_seconds_sum", 0) / lag_n if lag_n else 0
        out.append(
            f"serve projector: {int(passes):,} passes of "
            f"{m.get('plivo_tracker_projected_total', 0) / passes:.1f} journal rows on average, "
            f"{m.get('plivo_tracker_projection_seconds_sum', 0) / passes * 1000:.1f} ms each; "
            f"projection lag (ack → applied, plivo_tracker_projection_lag_seconds) mean "
            f"{lag_mean * 1000:.1f} ms, p99 in the bucket ≤ {lag_p99 * 1000:g} ms"
        )
    reads = serve.server.get("reads", [])
    if reads:
        took = sorted(end - start for start, end, _ in reads)
        rows = sum(r for _, _, r in reads)
        out.append(
            f"serve hub: {len(reads):,} database reads of {rows / len(reads):.1f} events on "
            f"average, each taking p50 {ms(pct(took, 50))}, p99 {ms(pct(took, 99))}, "
            f"max {ms(took[-1])}"
        )
    live = {
        k: v for k, v in m.items() if k.startswith("plivo_tracker_live_") and "_created" not in k
    }
    if live:
        out.append("serve live metrics: " + ", ".join(f"{k} {v:g}" for k, v in live.items()))
    for t in (base, serve):
        c = t.cpu
        span = c.get("machine total", 0) / (os.cpu_count() or 1)
        others = c.get("machine busy", 0) - sum(c.get(k, 0) for k in OURS)
        if span and others / span > 0.3:
            out.append(
                f"WARNING: other processes used {others / span:.0%} of one core during the "
                f"{t.name} window: its latencies measure the neighbours as much as the service"
            )
    out.extend(base.notes)
    out.extend(serve.notes)
    return out


# ---- main --------------------------------------------------------------------------------


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "load":
        load_main(sys.argv[2:])
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "clients":
        clients_main(sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(
        description="Commit → WebSocket frame latency against a same-run baseline "
        "(see the module docstring for what each number means)."
    )
    parser.add_argument("--duration", type=int, default=20, help="measured seconds (20)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds excluded first (2)")
    parser.add_argument("--rate", type=int, default=1000, help="status changes per second (1000)")
    parser.add_argument("--clients", type=int, default=20, help="WebSocket clients (20)")
    parser.add_argument(
        "--connections",
        type=int,
        default=64,
        help="HTTP keep-alive connections = most callbacks in flight (64)",
    )
    parser.add_argument(
        "--deflate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="clients offer permessage-deflate, as browsers do (default: yes)",
    )
    parser.add_argument(
        "--database-url",
        default="",
        help="default: a fresh SQLite file in a temp dir; postgresql+asyncpg://HOST/DB to use "
        "PostgreSQL (created if missing, migrated with `plivo-tracker db upgrade`)",
    )
    parser.add_argument("--write", metavar="FILE", help="append a dated section to FILE (markdown)")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the server over the window (raw stacks)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, records)")
    args = parser.parse_args()
    args.postgres = is_postgres(args.database_url)

    work = Path(tempfile.mkdtemp(prefix="plivo-bench-live-"))
    token = "bench-" + os.urandom(12).hex()
    postgres = args.postgres
    database_url = args.database_url or f"sqlite+aiosqlite:///{work / 'bench.db'}"
    label = "PostgreSQL" if postgres else "SQLite"
    env = server_env(work, database_url, token)
    load = load_average()
    print(
        f"work dir {work}; load average {load}; {args.rate:,} changes/s over "
        f"{args.connections} connections, "
        f"{args.clients} clients, {args.warmup} s warm-up + {args.duration} s"
    )
    if not prepare_database(env, work):
        return 1

    print("baseline ...")
    base_t = run_target("baseline", args, env, work, "baseline")
    print(f"plivo-tracker serve ({label}) ...")
    serve_t = run_target("serve", args, env, work, label)
    base, serve = summarise(base_t, args), summarise(serve_t, args)

    text = table(base, serve, label, args)
    notes = details(serve_t, base_t)
    print()
    print(text)
    print()
    print("\n".join(notes))
    if args.profile:
        print(f"\npy-spy raw stacks of the server: {work / 'py-spy' / 'server.txt'}")
        args.keep = True

    if args.write:
        when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        section = "\n".join(
            [
                f"## {when} — live stream, {label}, {args.rate:,} changes/s, "
                f"{args.clients} clients, {args.duration} s",
                "",
                f"- machine: {machine()}; load average before the run: {load}",
                f"- commit: {git_commit()}",
                f"- command: `python bench/live.py {' '.join(sys.argv[1:])}`",
                f"- load: open loop, evenly paced, up to {args.connections} connections; "
                f"clients: permessage-deflate {'on' if args.deflate else 'off'}; "
                "baseline measured in the same run",
                "",
                text,
                "",
                *[f"- {n}" for n in notes],
                "",
            ]
        )
        append_section(Path(args.write), section)

    if args.keep:
        print(f"\nkept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
