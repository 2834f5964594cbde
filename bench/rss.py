"""Server memory during a long callback replay: `plivo-tracker serve`'s RSS, sampled, plotted.

    python bench/rss.py                          # SQLite in a temp dir, 250,000 callbacks
    python bench/rss.py --database-url postgresql+asyncpg://127.0.0.1:5432/plivo_bench_rss
    python bench/rss.py --callbacks 50000 --csv /tmp/rss.csv
    python bench/rss.py --write docs/benchmarks.md   # replace its section, redraw docs/rss.svg
    python bench/rss.py --workers 2                  # passed to `serve` only when given

Target (issue): server RSS during a 250,000-callback replay ≤ 200 MB and flat.

1. Pre-generates N distinct, genuinely signed callbacks with bench/callbacks.py's generator
   (no retries: every (MessageUUID, Status, Sequence) and every nonce is new, so every one is
   stored) as raw HTTP/1.1 requests.
2. Starts `plivo-tracker serve` with the benchmarks' settings (`callbacks.server_env`: default
   server options, uvicorn's access log at its default but below LOG_LEVEL=warning) on a fresh
   SQLite file in a temp dir, or on `--database-url` (PostgreSQL: created if missing and
   migrated first; use a fresh database name).
3. From the moment `serve` is started, a thread samples the server's RSS every `--interval` s
   (0.5): VmRSS from /proc/<pid>/status summed over the process tree (`serve` and any worker
   processes it starts; pages shared between them are counted once per process), with the
   number of callbacks answered so far.
4. Sends each callback exactly once, in order, over `--connections` (50) keep-alive
   connections from this process (uvloop, raw sockets: `live.exchange`): a closed loop, as fast
   as the server answers, or paced at `--rate` per second. Nothing is retried: a request whose
   connection failed counts as unanswered.
5. Keeps sampling `--tail` s (10) after the last answer, waits for the spool to drain, stops
   the server and checks the database nonce by nonce: every callback answered 200 must be
   stored (LOST = 0). Stored callbacks are counted in `journal` if that table exists, else in
   `status_events`, by this run's nonce prefix when the table has a nonce column (else all rows:
   the database is fresh).

What is printed: RSS when the server was ready (before the first callback), at 25/50/75/100 %
of the callbacks answered, 10 s after, and the maximum; "flatness", the least-squares slope of
RSS against callbacks answered over the second half of the replay, in MB per 100,000 callbacks
(this script's bar for "flat": ≤ --max-slope, 2 MB per 100k, about 20 bytes kept per callback),
and how many callbacks it would take at that slope to reach 200 MB; the rate and the server's
CPU; the database counts and LOST.

`--csv FILE` writes every sample. `--write FILE` replaces this database's part of the section
"## Memory during a N-callback replay" in FILE (created before "## Runs" if missing; other
databases' parts are kept) and redraws the SVG plot (`--svg`, default rss.svg beside FILE): a
hand-drawn polyline per database, whose samples the SVG keeps in its <metadata> so that a run
on one database leaves the other's line in place.

The machine is shared (2 cores): the load generator, the server and, with PostgreSQL, its
backends compete for them, which moves the rate but hardly the RSS. PostgreSQL's own memory is
not the server's and is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import html
import json
import math
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict, cast

from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from callbacks import (
    CALLBACK_PATH,
    Proc,
    cpu_seconds,
    descendants,
    free_port,
    generate,
    git_commit,
    is_postgres,
    log_problems,
    machine,
    prepare_database,
    serve_command,
    server_env,
    wait_spool_empty,
)
from live import Conn, exchange

TARGET_MB = 200.0
MAX_SLOPE = 2.0  # MB per 100,000 callbacks over the second half: this script's bar for "flat"
PROGRESS = (0.25, 0.5, 0.75, 1.0)
STALL_SECONDS = 60.0  # no answer at all for this long: give up on the replay
SVG_W, SVG_H = 820, 340
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
SPARK = "▁▂▃▄▅▆▇█"


# ---- the server's memory -----------------------------------------------------------------


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0  # gone, or a zombie


@dataclass
class Sample:
    t: float  # seconds since `serve` was started
    phase: str  # start (until the first callback), load, tail
    rss_mb: float  # VmRSS summed over the process tree
    processes: int
    answered: int  # callbacks answered (any status) so far
    ok: int  # of which 200

    @property
    def row(self) -> list[str]:
        rss = f"{self.rss_mb:.1f}"
        return [
            f"{self.t:.2f}",
            self.phase,
            rss,
            *map(str, (self.processes, self.answered, self.ok)),
        ]


@dataclass
class Progress:
    """Shared with the sampler thread: plain ints, written by the event loop only."""

    phase: str = "start"
    answered: int = 0
    ok: int = 0


class Sampler(threading.Thread):
    def __init__(self, pid: int, t0: float, interval: float, progress: Progress) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid, self.t0, self.interval, self.progress = pid, t0, interval, progress
        self.samples: list[Sample] = []
        self.halt = threading.Event()

    def sample(self) -> Sample:
        p = self.progress
        phase, answered, ok = p.phase, p.answered, p.ok
        pids = descendants(self.pid)
        kb = sum(rss_kb(pid) for pid in pids)
        return Sample(time.monotonic() - self.t0, phase, kb / 1024, len(pids), answered, ok)

    def run(self) -> None:
        k = 0
        while True:
            s = self.sample()
            if s.rss_mb:
                self.samples.append(s)
            k += 1  # on a fixed grid: a slow sample does not shift the later ones
            if self.halt.wait(max(0.0, self.t0 + k * self.interval - time.monotonic())):
                return

    def stop(self) -> list[Sample]:
        self.halt.set()
        self.join()
        return self.samples


# ---- the replay --------------------------------------------------------------------------


def raw_requests(lines: list[str], host: str) -> list[bytes]:
    """bench/callbacks.py's data lines (body TAB v2 TAB v3 TAB nonce) as HTTP/1.1 requests."""
    out = []
    for line in lines:
        body, v2, v3, nonce = line.split("\t")
        head = (
            f"POST {CALLBACK_PATH} HTTP/1.1\r\nHost: {host}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            "User-Agent: PlivoHTTP/1.0 (bench)\r\n"
            f"X-Plivo-Signature-V2: {v2}\r\nX-Plivo-Signature-V2-Nonce: {nonce}\r\n"
            f"X-Plivo-Signature-V3: {v3}\r\nX-Plivo-Signature-V3-Nonce: {nonce}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        out.append((head + body).encode())
    return out


@dataclass
class Replay:
    statuses: array[int]  # per request: -1 never sent, 0 no answer (connection failed), or HTTP
    t0: float = 0.0  # monotonic, when serve was started
    started: float = 0.0  # monotonic, the first callback sent
    ended: float = 0.0
    notes: list[str] = field(default_factory=list)

    def count(self, pred: Callable[[int], bool]) -> int:
        return sum(1 for s in self.statuses if pred(s))


async def replay(
    reqs: list[bytes],
    port: int,
    connections: int,
    rate: float,
    progress: Progress,
    server: Proc,
    t0: float,
) -> Replay:
    """Send every request exactly once over `connections` keep-alive connections."""
    result = Replay(array("h", [-1]) * len(reqs), t0)
    todo = iter(range(len(reqs)))  # shared: each index is taken by one connection, once

    async def connect() -> Conn:
        return await asyncio.open_connection("127.0.0.1", port)

    async def connection() -> None:
        conn: Conn | None = await connect()
        for i in todo:
            if rate:
                await asyncio.sleep(max(0.0, result.started + i / rate - time.monotonic()))
            if conn is None:
                try:
                    conn = await connect()
                except OSError:
                    result.statuses[i] = 0
                    continue
            result.statuses[i] = 0
            try:
                code = await exchange(conn, reqs[i])
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                conn[1].close()
                conn, code = None, 0
            result.statuses[i] = code
            progress.answered += 1
            progress.ok += code == 200
            if code not in (0, 200) and conn is not None and conn[0].at_eof():
                conn[1].close()
                conn = None
        if conn is not None:
            conn[1].close()

    async def watchdog(tasks: list[asyncio.Task[None]]) -> None:
        last, since = -1, time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            if server.proc.poll() is not None:
                result.notes.append(f"serve exited ({server.proc.returncode}) during the replay")
            elif progress.answered != last:
                last, since = progress.answered, time.monotonic()
                continue
            elif time.monotonic() - since < STALL_SECONDS:
                continue
            else:
                result.notes.append(f"no answer for {STALL_SECONDS:.0f} s: replay abandoned")
            for task in tasks:
                task.cancel()
            return

    progress.phase = "load"
    result.started = time.monotonic()
    tasks = [asyncio.create_task(connection()) for _ in range(connections)]
    guard = asyncio.create_task(watchdog(tasks))
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    result.ended = time.monotonic()
    progress.phase = "tail"
    guard.cancel()
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    if failed:
        result.notes.append(f"{len(failed)} connections stopped early: {failed[0]!r}")
    return result


# ---- the database ------------------------------------------------------------------------


@dataclass
class Stored:
    table: str  # where stored callbacks are counted: journal, else status_events
    count: int
    nonces: set[str] | None  # this run's nonces in that table (None: it has no nonce column)
    extra: dict[str, int]  # callback_nonces (this run's), messages, quarantine: when present


async def count_stored(url: str, run_id: str) -> Stored:
    """Tolerant of the schema: counts in `journal` if it exists, else `status_events`, by this
    run's nonce prefix when the table has a nonce column."""
    engine = create_async_engine(url)
    like = {"p": run_id + "%"}
    try:
        async with engine.connect() as conn:
            columns = await conn.run_sync(
                lambda c: {
                    t: {col["name"] for col in inspect(c).get_columns(t)}
                    for t in inspect(c).get_table_names()
                }
            )
            quote = conn.dialect.identifier_preparer.quote
            table = "journal" if "journal" in columns else "status_events"
            if table not in columns:
                raise SystemExit(f"neither journal nor status_events in {url}")
            nonces: set[str] | None = None
            if "nonce" in columns[table]:
                q = text(f"SELECT nonce FROM {quote(table)} WHERE nonce LIKE :p")
                nonces = set((await conn.execute(q, like)).scalars())
                count = len(nonces)
            else:
                count = (
                    await conn.execute(text(f"SELECT count(*) FROM {quote(table)}"))
                ).scalar_one()
            extra: dict[str, int] = {}
            for name in ("callback_nonces", "quarantine", "messages"):
                if name == table or name not in columns:
                    continue
                where = " WHERE nonce LIKE :p" if "nonce" in columns[name] else ""
                q = text(f"SELECT count(*) FROM {quote(name)}{where}")
                extra[name] = int((await conn.execute(q, like)).scalar_one())
            return Stored(table, int(count), nonces, extra)
    finally:
        await engine.dispose()


# ---- numbers -----------------------------------------------------------------------------


def slope_per_100k(samples: Sequence[Sample]) -> float | None:
    """Least-squares slope of RSS against callbacks answered, in MB per 100,000 callbacks."""
    if len(samples) < 3:
        return None
    xs = [s.answered for s in samples]
    ys = [s.rss_mb for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if not sxx:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx * 100_000


@dataclass
class Summary:
    label: str
    n: int
    ready: Sample | None  # last sample before the first callback
    at: dict[float, Sample | None]  # first sample at or past each share of progress
    after: Sample | None  # last sample of the tail
    tail: float  # seconds sampled after the replay
    top: Sample
    slope: float | None
    seconds: float
    rate: float
    cpu: float  # server CPU over the replay, share of one core
    client_cpu: float  # this process's (load generator and sampler), share of one core
    ok: int
    other: int  # answered, not 200
    unanswered: int
    stored: Stored
    lost: int
    notes: list[str]

    @property
    def flat(self) -> bool:
        return self.slope is not None and self.slope <= MAX_SLOPE

    @property
    def room(self) -> str:
        """Callbacks until 200 MB at the second half's slope."""
        if self.slope is None or self.slope <= 0:
            return "never (not growing)"
        last = self.at[1.0] or self.top
        more = (TARGET_MB - last.rss_mb) / self.slope * 100_000
        return "already over" if more <= 0 else f"{more + last.answered:,.0f} callbacks"


def summarise(
    label: str,
    n: int,
    samples: list[Sample],
    rep: Replay,
    cpu: tuple[float, float],
    stored: Stored,
    missing: list[str] | None,
) -> Summary:
    load = [s for s in samples if s.phase == "load"]
    before = [s for s in samples if s.phase == "start"]
    at: dict[float, Sample | None] = {}
    for share in PROGRESS:
        at[share] = next((s for s in samples if s.answered >= share * n), None)
    answered = load[-1].answered if load else 0
    half = [s for s in load if s.answered >= answered / 2]
    ok = rep.count(lambda s: s == 200)
    seconds = rep.ended - rep.started
    # Nonce by nonce when the table has nonces, else by counts (the database is fresh).
    lost = len(missing) if missing is not None else max(0, ok - stored.count)
    return Summary(
        label=label,
        n=n,
        ready=before[-1] if before else None,
        at=at,
        after=samples[-1] if samples and samples[-1].phase == "tail" else None,
        tail=samples[-1].t - (rep.ended - rep.t0) if samples else 0.0,
        top=max(samples, key=lambda s: s.rss_mb),
        slope=slope_per_100k(half),
        seconds=seconds,
        rate=rep.count(lambda s: s > 0) / seconds if seconds else 0.0,
        cpu=cpu[0] / seconds if seconds else 0.0,
        client_cpu=cpu[1] / seconds if seconds else 0.0,
        ok=ok,
        other=rep.count(lambda s: s > 0 and s != 200),
        unanswered=rep.count(lambda s: s <= 0),
        stored=stored,
        lost=lost,
        notes=list(rep.notes),
    )


def missing_nonces(rep: Replay, stored: Stored, run_id: str) -> list[str] | None:
    """Nonces answered 200 but not in the table (None when the table has no nonce column)."""
    if stored.nonces is None:
        return None
    acked = (f"{run_id}{i:012d}" for i, s in enumerate(rep.statuses) if s == 200)
    return [nonce for nonce in acked if nonce not in stored.nonces]


def mark(good: bool) -> str:
    return "✓" if good else "✗"


def mb(s: Sample | None) -> str:
    return "—" if s is None else f"{s.rss_mb:.1f} MB"


def table(s: Summary) -> str:
    def where(x: Sample | None) -> str:
        return "" if x is None else f"at {x.t:.1f} s, {x.answered:,} callbacks answered"

    slope = "n/a" if s.slope is None else f"{s.slope:+.2f} MB per 100k callbacks"
    stored = f"{s.stored.count:,} in {s.stored.table}" + "".join(
        f", {v:,} in {k}" for k, v in s.stored.extra.items()
    )
    if s.stored.nonces is None:
        stored += f" ({s.stored.table} has no nonce column: all its rows)"
    rows = [
        ("measure", "value", "target"),
        ("RSS when ready, before the first callback", mb(s.ready), ""),
        *(
            (f"RSS at {int(p * 100)} % ({int(p * s.n):,} callbacks)", mb(x), "")
            for p, x in s.at.items()
        ),
        (f"RSS {s.tail:.0f} s after the replay", mb(s.after), ""),
        (
            "max RSS",
            f"{s.top.rss_mb:.1f} MB {where(s.top)}",
            f"≤ {TARGET_MB:.0f} MB {mark(s.top.rss_mb <= TARGET_MB)}",
        ),
        ("flatness: slope over the second half", slope, f"≤ {MAX_SLOPE:g} MB {mark(s.flat)}"),
        ("200 MB reached at that slope after", s.room, ""),
        (
            "callbacks answered",
            f"{s.ok:,} × 200, {s.other:,} other, {s.unanswered:,} unanswered of {s.n:,}",
            f"all 200 {mark(s.ok == s.n)}",
        ),
        (
            "replay",
            f"{s.seconds:.1f} s, {s.rate:,.0f} callbacks/s, CPU: server {s.cpu:.0%}, "
            f"load generator {s.client_cpu:.0%}",
            "",
        ),
        ("in the database after", stored, ""),
        ("LOST (answered 200, not stored)", str(s.lost), f"0 {mark(s.lost == 0)}"),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = []
    for k, r in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        if k == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def sparkline(samples: list[Sample], width: int = 64) -> str:
    """The run in `width` characters (each the highest sample of its slice of time), scaled
    from the lowest to the highest sample; the scale is printed beside it."""
    if not samples:
        return ""
    t_start, t_end = samples[0].t, max(samples[-1].t, samples[0].t + 1e-3)
    cols: list[float] = []
    for k in range(width):
        lo = t_start + (t_end - t_start) * k / width
        hi = t_start + (t_end - t_start) * (k + 1) / width
        inside = [s.rss_mb for s in samples if lo <= s.t < hi or (k == width - 1 and s.t == hi)]
        cols.append(max(inside) if inside else (cols[-1] if cols else samples[0].rss_mb))
    low, high = min(cols), max(cols)
    span = (high - low) or 1.0
    line = "".join(SPARK[min(len(SPARK) - 1, int((c - low) / span * len(SPARK)))] for c in cols)
    each = (t_end - t_start) / width
    return f"{line}  {low:.1f}–{high:.1f} MB, {each:.1f} s per column (its highest sample)"


def progress_rows(samples: list[Sample], n: int) -> str:
    """A sample at every 10 % of the callbacks answered, plus the first and last."""
    picks: list[tuple[str, Sample]] = [("serve started", samples[0])]
    ready = [s for s in samples if s.phase == "start"]
    if ready:
        picks.append(("ready", ready[-1]))
    for tenth in range(1, 11):
        hit = next((s for s in samples if s.answered >= tenth * n / 10), None)
        if hit is not None and hit is not picks[-1][1]:  # samples coarser than 10 % steps
            picks.append((f"{tenth * 10} %", hit))
    picks.append(("end of tail", samples[-1]))
    lines = ["| point | time | answered | RSS |", "| --- | --- | --- | --- |"]
    lines += [f"| {p} | {s.t:.1f} s | {s.answered:,} | {s.rss_mb:.1f} MB |" for p, s in picks]
    return "\n".join(lines)


# ---- SVG ---------------------------------------------------------------------------------


class Series(TypedDict):
    n: int  # callbacks in the replay: one plot compares runs of the same size only
    legend: str
    t: list[float]  # seconds since serve was started
    rss: list[float]  # MB
    load: list[float]  # when the first callback was sent and the last one answered


def nice_step(span: float, ticks: int) -> float:
    """A round tick step (1, 2, 2.5 or 5 × 10^k) giving about `ticks` ticks over `span`."""
    raw = max(span, 1e-9) / ticks
    mag = 10.0 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * mag >= raw)


def write_svg(
    path: Path, label: str, n: int, samples: list[Sample], load: tuple[float, float], legend: str
) -> None:
    """Redraw the plot with this run's line; other labels' lines of a replay of the same size
    are read back from the file."""
    series: dict[str, Series] = {}
    if path.exists():
        found = re.search(r'<metadata id="rss-data">(.*?)</metadata>', path.read_text(), re.S)
        if found:
            try:
                series = cast(dict[str, Series], json.loads(html.unescape(found.group(1))))
            except ValueError:
                series = {}
    series = {k: v for k, v in series.items() if isinstance(v, dict) and v.get("n") == n}
    step = max(1, len(samples) // 1500)
    kept = samples[::step]
    series[label] = {
        "n": n,
        "legend": legend,
        "t": [round(s.t, 2) for s in kept],
        "rss": [round(s.rss_mb, 1) for s in kept],
        "load": [round(load[0], 2), round(load[1], 2)],
    }
    left, right, top, bottom = 64, 20, 40, 96 + 18 * len(series)
    height = SVG_H + 18 * len(series)
    pw, ph = SVG_W - left - right, height - top - bottom
    t_max = max(max(v["t"]) for v in series.values())
    r_max = max(max(v["rss"]) for v in series.values())
    y_max = max(TARGET_MB * 1.1, r_max * 1.1)
    ystep = nice_step(y_max, 5)
    y_max = ystep * -(-y_max // ystep)
    xstep = nice_step(t_max, 8)
    x_max = xstep * -(-t_max // xstep)

    def x(t: float) -> float:
        return left + t / x_max * pw

    def y(r: float) -> float:
        return top + ph - r / y_max * ph

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_W}" height="{height}" '
        f'viewBox="0 0 {SVG_W} {height}" font-family="sans-serif" font-size="12">',
        f'<metadata id="rss-data">{html.escape(json.dumps(series))}</metadata>',
        f'<rect width="{SVG_W}" height="{height}" fill="white"/>',
        f'<text x="{SVG_W / 2}" y="22" text-anchor="middle" font-size="14">'
        "plivo-tracker serve: RSS during the callback replay (bench/rss.py)</text>",
    ]
    v = 0.0
    while v <= y_max + 1e-9:
        out.append(
            f'<line x1="{left}" y1="{y(v):.1f}" x2="{left + pw}" y2="{y(v):.1f}" stroke="#ddd"/>'
            f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>'
        )
        v += ystep
    v = 0.0
    while v <= x_max + 1e-9:
        out.append(
            f'<line x1="{x(v):.1f}" y1="{top + ph}" x2="{x(v):.1f}" y2="{top + ph + 5}" '
            f'stroke="black"/><text x="{x(v):.1f}" y="{top + ph + 18}" '
            f'text-anchor="middle">{v:g}</text>'
        )
        v += xstep
    out += [
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>',
        f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>',
        f'<text x="16" y="{top + ph / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {top + ph / 2})">RSS (MB, process tree)</text>',
        f'<text x="{left + pw / 2}" y="{top + ph + 36}" text-anchor="middle">'
        "seconds since serve was started</text>",
        f'<line x1="{left}" y1="{y(TARGET_MB):.1f}" x2="{left + pw}" y2="{y(TARGET_MB):.1f}" '
        'stroke="#888" stroke-dasharray="6 4"/>',
        f'<text x="{left + pw - 4}" y="{y(TARGET_MB) - 5:.1f}" text-anchor="end" fill="#555">'
        f"target ≤ {TARGET_MB:.0f} MB</text>",
    ]
    for k, (name, data) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        ts, rs = data["t"], data["rss"]
        pts = " ".join(f"{x(t):.1f},{y(r):.1f}" for t, r in zip(ts, rs, strict=True))
        out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        for t in data["load"]:
            r = rs[min(range(len(ts)), key=lambda j: abs(ts[j] - t))]
            out.append(f'<circle cx="{x(t):.1f}" cy="{y(r):.1f}" r="3.5" fill="{colour}"/>')
        ly = top + ph + 58 + 18 * k
        out.append(
            f'<line x1="{left}" y1="{ly - 4}" x2="{left + 24}" y2="{ly - 4}" stroke="{colour}" '
            f'stroke-width="2"/><text x="{left + 30}" y="{ly}">'
            f"{html.escape(name)}: {html.escape(data['legend'])}</text>"
        )
    out.append(
        f'<text x="{SVG_W - right}" y="{top + ph + 58 + 18 * len(series)}" text-anchor="end" '
        'fill="#555">dots: first callback sent, last one answered</text>'
    )
    out.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")
    print(f"drew {path}")


# ---- docs --------------------------------------------------------------------------------


def replace_part(path: Path, heading: str, intro: str, label: str, part: str) -> None:
    """Put `part` under `### label` in the section `heading` of `path`: replaced if there,
    other labels kept; a missing section goes before "## Runs" (or at the end)."""
    lines = (path.read_text() if path.exists() else "# Benchmarks\n").rstrip("\n").split("\n")
    start = lines.index(heading) if heading in lines else None
    parts: dict[str, list[str]] = {}
    if start is None:
        end = lines.index("## Runs") if "## Runs" in lines else len(lines)
        start = end
    else:
        later = (i for i in range(start + 1, len(lines)) if lines[i].startswith("## "))
        end = next(later, len(lines))
        current = None
        for line in lines[start + 1 : end]:
            if line.startswith("### "):
                current = line[4:].strip()
                parts[current] = []
            elif current is not None:
                parts[current].append(line)
    parts[label] = part.strip("\n").split("\n")
    section = [heading, "", intro.strip("\n"), ""]
    for name, body in parts.items():
        while body and not body[-1].strip():
            body.pop()
        section += [f"### {name}", *(body if body and not body[0] else ["", *body]), ""]
    tail = lines[end:]
    new = [*lines[:start]]
    if new and new[-1].strip():
        new.append("")
    new += section + tail
    path.write_text("\n".join(new).rstrip("\n") + "\n")
    print(f"wrote the section {heading!r} ({label}) in {path}")


# ---- main --------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Server RSS during a long signed-callback replay (see the module docstring)."
    )
    parser.add_argument("--callbacks", type=int, default=250_000, help="callbacks (250,000)")
    parser.add_argument("--connections", type=int, default=50, help="keep-alive connections (50)")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="callbacks per second (default: closed loop)"
    )
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("--tail", type=float, default=10.0, help="seconds sampled after (10)")
    parser.add_argument(
        "--workers", type=int, default=None, help="`serve --workers N` (passed only when given)"
    )
    parser.add_argument(
        "--database-url",
        default="",
        help="default: a fresh SQLite file in a temp dir; postgresql+asyncpg://HOST/DB to use "
        "PostgreSQL (created if missing, migrated first; give a fresh name)",
    )
    parser.add_argument("--csv", metavar="FILE", help="write every sample to FILE")
    parser.add_argument(
        "--write", metavar="FILE", help="replace this database's part of the section in FILE"
    )
    parser.add_argument("--svg", metavar="FILE", help="the plot (default: rss.svg beside --write)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (server log)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.callbacks < 1 or args.connections < 1 or args.interval <= 0:
        parser.error("--callbacks, --connections and --interval must be positive")

    import uvloop

    work = Path(tempfile.mkdtemp(prefix="plivo-bench-rss-"))
    run_id = f"{random.SystemRandom().randrange(10**8):08d}"
    token = "bench-" + os.urandom(12).hex()
    database_url = args.database_url or f"sqlite+aiosqlite:///{work / 'bench.db'}"
    label = "PostgreSQL" if is_postgres(database_url) else "SQLite"
    n = args.callbacks
    print(f"work dir {work}")

    t = time.monotonic()
    port = free_port()
    lines = generate(n, token, run_id, 0.0, args.seed)
    reqs = raw_requests(lines, f"127.0.0.1:{port}")
    del lines
    print(f"generated {n:,} signed callbacks in {time.monotonic() - t:.1f}s (nonces {run_id}…)")

    env = server_env(work, database_url, token)
    env["PORT"] = str(port)
    if not prepare_database(env, work):
        return 1
    cmd = [*serve_command(), "serve"]
    if args.workers is not None:
        cmd += ["--workers", str(args.workers)]
    base = f"http://127.0.0.1:{port}"
    progress = Progress()
    t0 = time.monotonic()
    server = Proc(cmd, env, work, work / "serve.log")
    sampler = Sampler(server.proc.pid, t0, args.interval, progress)
    sampler.start()
    try:
        server.wait_http(base + "/health")
        server.wait_http(base + "/ready")
        print(f"serve ({label}) ready after {time.monotonic() - t0:.1f}s; replaying {n:,} ...")
        cpu0, mine0 = (
            sum(cpu_seconds(p) for p in descendants(server.proc.pid)),
            time.process_time(),
        )
        rep = uvloop.run(replay(reqs, port, args.connections, args.rate, progress, server, t0))
        cpu = (
            sum(cpu_seconds(p) for p in descendants(server.proc.pid)) - cpu0,
            time.process_time() - mine0,
        )
        print(f"replay done in {rep.ended - rep.started:.1f}s; sampling {args.tail:g}s more ...")
        time.sleep(max(0.0, rep.ended + args.tail - time.monotonic()))
        samples = sampler.stop()
        spool_left = wait_spool_empty(base)
    finally:
        sampler.halt.set()
        code = server.stop()
    if code not in (0, -signal.SIGTERM):
        rep.notes.append(f"serve exited with {code} after SIGTERM")
    if spool_left:
        rep.notes.append(f"{spool_left} spool files still pending: LOST may count them")

    stored = asyncio.run(count_stored(database_url, run_id))
    missing = missing_nonces(rep, stored, run_id)
    s = summarise(label, n, samples, rep, cpu, stored, missing)
    if missing:
        s.notes.append(f"answered 200 but not stored: {', '.join(missing[:5])} …")
    problems = log_problems(work / "serve.log")
    s.notes.append(f"serve log: {len(problems)} warning/error lines")
    s.notes.extend("  " + p[:300] for p in problems[:5])

    report = table(s)
    # From the last sample before the first callback: start-up would flatten the scale.
    spark = sparkline(samples[max(0, len([x for x in samples if x.phase == "start"]) - 1) :])
    print()
    print(report)
    print()
    print("RSS from ready to the end: " + spark)
    print("\n".join(s.notes))

    if args.csv:
        with Path(args.csv).open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["t_s", "phase", "rss_mb", "processes", "answered", "ok"])
            w.writerows(x.row for x in samples)
        print(f"wrote {len(samples)} samples to {args.csv}")

    if args.write:
        target = Path(args.write)
        svg = Path(args.svg) if args.svg else target.parent / "rss.svg"
        when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        commit = git_commit()
        write_svg(
            svg,
            label,
            n,
            samples,
            (rep.started - rep.t0, rep.ended - rep.t0),
            f"max {s.top.rss_mb:.0f} MB, slope {s.slope or 0:+.1f} MB/100k, {when}, {commit}",
        )
        rel = os.path.relpath(svg, target.parent)
        intro = (
            f"`bench/rss.py`: `plivo-tracker serve`'s RSS (VmRSS summed over its process tree) "
            f"sampled every {args.interval:g} s while {n:,} distinct signed callbacks are sent "
            f"once each, and for {args.tail:g} s after. Target: ≤ 200 MB and flat. "
            '"Slope" is RSS against '
            f"callbacks answered over the second half of the replay (flat: ≤ {MAX_SLOPE:g} MB "
            "per 100k). The machine has 2 cores shared with other work: the load generator, "
            "the server and PostgreSQL compete for them, which moves the rate, not the memory."
            f"\n\n![serve RSS during the replay]({rel})\n\nPlot: [{rel}]({rel})"
        )
        part = "\n".join(
            [
                f"- run: {when}, commit {commit}",
                f"- machine: {machine()}",
                f"- command: `python bench/rss.py {' '.join(sys.argv[1:])}`",
                f"- load: {args.connections} keep-alive connections, "
                + (f"paced at {args.rate:g}/s" if args.rate else "closed loop")
                + f"; serve {'--workers ' + str(args.workers) if args.workers else 'one process'}",
                "",
                report,
                "",
                "```text",
                spark,
                "```",
                "",
                progress_rows(samples, n),
                "",
                *[f"- {x.strip()}" for x in s.notes],
            ]
        )
        replace_part(target, f"## Memory during a {n:,}-callback replay", intro, label, part)

    if args.keep:
        print(f"\nkept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if s.lost else 0  # the memory targets are reported, not enforced


if __name__ == "__main__":
    sys.exit(main())
