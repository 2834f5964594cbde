"""Scale-out under faults: two `serve` processes (`--workers 1` each, on two ports) and two
`plivo-tracker worker` processes on one database, with the standalone simulator
(`plivo-tracker simulate`) standing in for Plivo, under a steady load for the whole run:

- sends through the API of both serves, each with an Idempotency-Key and retried with that key
  (at either serve) after a connection error or a 5xx, so "sent exactly once" is counted at the
  simulator;
- genuinely signed status callbacks posted straight to both serves (each signed for the serve it
  goes to), a share of them sent again under a new nonce as Plivo retries; every one answered
  200 is recorded as acknowledged. The simulator posts its own callbacks too: each dispatching
  process gives Plivo its own `PUBLIC_BASE_URL` (serve A and worker 1: A's, serve B and worker 2:
  B's), so they reach either serve, and are retried by the simulator while their serve is down;
- a WebSocket client on serve A's live stream (`?since=0`) that, whenever its connection ends
  (its serve killed, or the test moving it: once after A's restart, once after the database's),
  stays away a second and resumes on the other serve with `?since=<last id>`, so that its
  resumes replay from the database what it missed while away.

The faults, in order: `kill -9` serve A (restarted on the same port and spool a few seconds
later: its spool and the callbacks the simulator retries to A's URL need it back), `kill -9`
worker 1 (not restarted: the remaining dispatchers take over what it had claimed), then a
restart of the database server itself.

Afterwards: every acknowledged callback is in the journal and projected exactly once (the
projector's cursor at the journal's head, one event per report, none twice); every message was
sent exactly once, counted at the simulator; every message settles within a bound (60 s after
the load, or, for a message a dispatcher had claimed when it was killed or when its pass was
cut by the restart, once that claim has run out: `dispatcher.LEASE` after the database is back);
and the WebSocket client got every status change the database holds, in order, none twice.
Spool files are replayed and no process logs an event that means a bug (`FORBIDDEN_EVENTS`).

The database is the `database` fixture's parameter (`SERVER_DATABASES`); what depends on the
database server (restarting it) is keyed by the URL's scheme in `restart_database`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.sync.client import connect

from plivo_tracker.db.engine import make_engine
from plivo_tracker.messages.models import callback_nonces, journal, outbox, status_events
from plivo_tracker.outbound.dispatcher import LEASE
from tests.conftest import (
    AUTH,
    AUTH_ID,
    TOKEN,
    callback_fields,
    free_port,
    new_nonce,
    new_uuid,
    signed_form,
)
from tests.e2e.server import Server, server_cmd, simulator_process, wait_projected

pytestmark = pytest.mark.slow

# The server databases this test runs on ("mariadb" joins once the fixture offers it).
SERVER_DATABASES = ["postgresql", "mariadb"]

SEND_INTERVAL = 0.12  # seconds between two new messages (~8/s)
CALLBACK_INTERVAL = 0.05  # seconds between two of our own callbacks (~20/s)
REPOST_SHARE = 0.1  # share of acknowledged callbacks posted again under a new nonce
PHASE = 6.0  # seconds of load before, between and after the faults
SETTLE_WITHIN = 60.0  # seconds after the load stops: every message has a final status ...
# ... except one a dispatcher had claimed when it was killed, or when its pass failed as the
# database restarted: its claim (dispatcher.LEASE) runs out first, then it is looked up.
STRANDED_WITHIN = LEASE.total_seconds() + 30.0  # seconds after the last such fault
GIVE_UP_AFTER = 90.0  # seconds a client keeps retrying one send or one callback
STATUSES = ("queued", "sent", "delivered")
RESUME_AFTER = 1.0  # seconds the stream's client stays away before it resumes elsewhere
# Log events that mean a bug, whatever the faults.
FORBIDDEN_EVENTS = (
    "http.unhandled",
    "callback.unhandled",
    "leader.job_failed",
    "projector.row_set_aside",
)


# --- the database server --------------------------------------------------------------------


def scheme(url: str) -> str:
    """`postgresql` for `postgresql+asyncpg://…`, `mysql` for MariaDB's `mysql+asyncmy://…`."""
    return url.split("://", 1)[0].split("+", 1)[0]


def _restart_postgresql() -> None:
    [version] = os.listdir("/etc/postgresql")
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        capture_output=True,
        timeout=120,
    )


def _can_restart_postgresql() -> str | None:
    if shutil.which("pg_ctlcluster") is None or not os.path.isdir("/etc/postgresql"):
        return "pg_ctlcluster not found"
    if len(os.listdir("/etc/postgresql")) != 1:
        return "not exactly one PostgreSQL version in /etc/postgresql"
    return None if os.geteuid() == 0 else "restarting PostgreSQL needs root"


MARIADBD = "/usr/sbin/mariadbd"


def _mariadbd_pids() -> list[int]:
    found = subprocess.run(["pidof", "mariadbd"], capture_output=True, text=True, check=False)
    return [int(p) for p in found.stdout.split()]


def _restart_mariadb() -> None:
    """Stop mariadbd as its service would (SIGTERM: a clean shutdown), then start it the way
    the machine starts it."""
    for pid in _mariadbd_pids():
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 120
    while _mariadbd_pids():
        assert time.monotonic() < deadline, "mariadbd did not stop"
        time.sleep(0.1)
    subprocess.run(
        ["start-stop-daemon", "--start", "--oknodo", "--background", "--exec", MARIADBD],
        check=True,
        capture_output=True,
        timeout=60,
    )


def _can_restart_mariadb() -> str | None:
    if not os.path.exists(MARIADBD) or shutil.which("start-stop-daemon") is None:
        return "mariadbd or start-stop-daemon not found"
    if not _mariadbd_pids():
        return "no mariadbd running"
    return None if os.geteuid() == 0 else "restarting MariaDB needs root"


# scheme -> (restart the server, why it cannot be done here or None)
RESTARTS: dict[str, tuple[Callable[[], None], Callable[[], str | None]]] = {
    "postgresql": (_restart_postgresql, _can_restart_postgresql),
    "mysql": (_restart_mariadb, _can_restart_mariadb),
}


def restart_database(url: str) -> None:
    """Restart the database server `url` lives on (every connection to it is cut)."""
    RESTARTS[scheme(url)][0]()


async def _answers(url: str) -> bool:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False
    finally:
        await engine.dispose()


def wait_database(url: str, within: float = 60.0) -> float:
    """Until the database at `url` accepts connections again; returns the seconds it took."""
    start = time.monotonic()
    while not asyncio.run(_answers(url)):
        if time.monotonic() - start > within:
            pytest.fail(f"the database did not come back within {within} s")
        time.sleep(0.2)
    return time.monotonic() - start


@dataclass
class Stored:
    """What the database holds in the end (read through SQLAlchemy: any dialect)."""

    nonces: set[str]
    journal: list[tuple[str, str, str, str | None]]  # (dedupe_key, message_key, status, nonce)
    events: list[tuple[int, str, str, str | None, str, str | None, str | None]]
    # ^ (id, dedupe_key, source, message_uuid, status, previous_status, message_status), by id


async def _read(url: str) -> Stored:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            nonces = set((await conn.execute(select(callback_nonces.c.nonce))).scalars())
            j = journal.c
            rows = await conn.execute(select(j.dedupe_key, j.message_key, j.status, j.nonce))
            journaled = [(k, m, s, n) for k, m, s, n in rows]
            e = status_events.c
            rows = await conn.execute(
                select(
                    e.id,
                    e.dedupe_key,
                    e.source,
                    e.message_uuid,
                    e.status,
                    e.previous_status,
                    e.message_status,
                ).order_by(e.id)
            )
            events = [tuple(r) for r in rows]
    finally:
        await engine.dispose()
    return Stored(nonces, journaled, events)  # type: ignore[arg-type]


async def _outbox_rows(url: str, ids: list[int]) -> list[dict[str, Any]]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(select(outbox).where(outbox.c.message_id.in_(ids)))
            return [r._asdict() for r in rows]
    finally:
        await engine.dispose()


def explain(url: str, base: str, ids: list[int]) -> str:
    """What the outbox and the API say about messages that did not settle (for the failure)."""
    messages = [httpx.get(f"{base}/api/messages/{i}", headers=AUTH, timeout=10).json() for i in ids]
    found = {"outbox": asyncio.run(_outbox_rows(url, ids)), "messages": messages}
    return json.dumps(found, default=str)


# --- the load -------------------------------------------------------------------------------


@dataclass
class Sends:
    """Messages sent through the API: each number once, each with its own Idempotency-Key."""

    ids: dict[str, int] = field(default_factory=dict)  # number -> message id (202)
    times: list[float] = field(default_factory=list)  # when each 202 came (monotonic)
    retried: int = 0  # sends that needed more than one request
    not_accepted: Counter[str] = field(default_factory=Counter)  # what the retries met
    lost: list[str] = field(default_factory=list)  # sends never answered 202 (a failure)
    odd: list[tuple[str, int, str]] = field(default_factory=list)  # 4xx: a failure


def send_load(bases: list[str], stop: threading.Event, out: Sends) -> None:
    with httpx.Client(headers=AUTH, timeout=10.0) as client:
        for n in itertools.count():
            if stop.is_set():
                return
            number = f"+1415555{n:04d}"
            body = {"to": number, "text": f"hello {n}"}
            headers = {"Idempotency-Key": f"scale-out-{n}"}
            deadline = time.monotonic() + GIVE_UP_AFTER
            for attempt in itertools.count():
                base = bases[(n + attempt) % len(bases)]  # a retry goes to the other serve
                try:
                    resp = client.post(base + "/api/messages", json=body, headers=headers)
                except httpx.HTTPError as exc:
                    out.not_accepted[type(exc).__name__] += 1
                else:
                    if resp.status_code == 202:
                        [message] = resp.json()["messages"]
                        if number in out.ids:  # pragma: no cover - a new number each time
                            out.odd.append((number, 202, "answered twice"))
                        out.ids[number] = message["id"]
                        out.times.append(time.monotonic())
                        out.retried += attempt > 0
                        break
                    if resp.status_code < 500:
                        out.odd.append((number, resp.status_code, resp.text[:300]))
                        break
                    out.not_accepted[str(resp.status_code)] += 1
                if time.monotonic() > deadline:
                    out.lost.append(number)
                    break
                time.sleep(0.25)
            time.sleep(SEND_INTERVAL)


@dataclass
class Callbacks:
    """Our own signed callbacks: nonce -> (uuid, status, result) of every one answered 200."""

    acked: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    times: list[float] = field(default_factory=list)  # when each 200 came (monotonic)
    refused: Counter[str] = field(default_factory=Counter)  # what the retries met
    lost: list[tuple[str, str]] = field(default_factory=list)  # never acknowledged (a failure)
    uuids: list[str] = field(default_factory=list)


def callback_load(bases: list[str], stop: threading.Event, out: Callbacks) -> None:
    """Each UUID's queued, sent and delivered callbacks in order, alternating serves; a refused
    one is posted again under a new nonce (as Plivo retries) until it is acknowledged."""
    rng = random.Random(20261130)
    with httpx.Client(timeout=10.0) as client:

        def post(uuid: str, status: str, seq: int, first: int) -> bool:
            fields = callback_fields(uuid, status, Sequence=str(seq))
            deadline = time.monotonic() + GIVE_UP_AFTER
            for attempt in itertools.count():
                base = bases[(first + attempt) % len(bases)]
                nonce = new_nonce()
                target, body, headers = signed_form(fields, nonce=nonce, base_url=base)
                try:
                    resp = client.post(base + target, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    out.refused[type(exc).__name__] += 1
                else:
                    if resp.status_code == 200:
                        out.acked[nonce] = (uuid, status, resp.json()["result"])
                        out.times.append(time.monotonic())
                        return True
                    out.refused[str(resp.status_code)] += 1
                if time.monotonic() > deadline:
                    out.lost.append((uuid, status))
                    return False
                time.sleep(0.25)
            raise AssertionError("unreachable")

        for n in itertools.count():
            if stop.is_set():
                return
            uuid = new_uuid()
            out.uuids.append(uuid)
            for seq, status in enumerate(STATUSES, start=1):
                if post(uuid, status, seq, n + seq) and rng.random() < REPOST_SHARE:
                    post(uuid, status, seq, n + seq + 1)  # its 200 "lost": Plivo posts it again
                time.sleep(CALLBACK_INTERVAL)


@dataclass
class Connection:
    port: int
    since: int
    replayed: int = 0  # frames before `ready`: what it missed while away, from the database


@dataclass
class Watcher:
    """A WebSocket client of the live stream that, whenever its connection ends (its serve
    died, or `drop` asked it to go), stays away a moment and resumes on the other serve with
    ?since=<the last id it got>."""

    frames: list[dict[str, Any]] = field(default_factory=list)
    connections: list[Connection] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    drop: threading.Event = field(default_factory=threading.Event)

    @property
    def last_id(self) -> int:
        return self.frames[-1]["id"] if self.frames else 0


def watch(ports: list[int], stop: threading.Event, out: Watcher) -> None:
    for turn in itertools.count():
        if stop.is_set():
            return
        port = ports[turn % len(ports)]
        since = out.last_id
        url = f"ws://127.0.0.1:{port}/ws?since={since}"
        try:
            with connect(url, additional_headers=AUTH, open_timeout=5) as ws:
                this = Connection(port, since)
                out.connections.append(this)
                live = False
                while not stop.is_set() and not out.drop.is_set():
                    try:
                        raw = ws.recv(timeout=0.2)
                    except TimeoutError:
                        continue
                    frame = json.loads(raw)
                    if frame["type"] == "error":
                        out.problems.append(f"error frame on {port}: {frame}")
                        break
                    live = live or frame["type"] == "ready"
                    if frame["type"] not in ("status", "message"):
                        continue
                    if frame["id"] <= out.last_id:
                        out.problems.append(f"id {frame['id']} after {out.last_id} on {port}")
                    out.frames.append(frame)
                    this.replayed += not live
        except (OSError, ConnectionClosed, InvalidStatus, WebSocketException, TimeoutError):
            pass
        out.drop.clear()
        time.sleep(RESUME_AFTER)


@contextlib.contextmanager
def running(*threads: threading.Thread) -> Iterator[None]:
    for t in threads:
        t.start()
    try:
        yield
    finally:
        for t in threads:
            t.join(timeout=GIVE_UP_AFTER + 30)


# --- the processes --------------------------------------------------------------------------


def process_env(database: str, sim: str, public_base_url: str) -> dict[str, str]:
    """What every serve and worker shares, and the URL Plivo is told to call back."""
    return {
        "DATABASE_URL": database,
        "PUBLIC_BASE_URL": public_base_url,
        "ALLOW_PRIVATE_CALLBACK_URL": "true",
        "PLIVO_API_URL": sim,
        "PLIVO_SRC": "14155550100",
        "PLIVO_MPS": "200",
        "PLIVO_TIMEOUT_SECONDS": "2",
        "PLIVO_LIST_PER_MINUTE": "600",
        "RECONCILE_AFTER_SECONDS": "1",
        "STUCK_AFTER_SECONDS": "5",
        "SWEEP_INTERVAL_SECONDS": "1",
        "NO_RECEIPT_AFTER_SECONDS": "10",
        "RESEND_ERROR_CODES": "none",  # "sent exactly once" is what this test counts
        "LIVE_POLL_SECONDS": "0.2",
        "LOG_LEVEL": "info",
    }


class Worker:
    """`plivo-tracker worker` as a subprocess, its output in a log file."""

    def __init__(self, tmp_path: Path, name: str, env: dict[str, str]) -> None:
        self.log_path = tmp_path / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [server_cmd()[0], "worker"],
            cwd=tmp_path,
            env={**os.environ, "PLIVO_AUTH_ID": AUTH_ID, "PLIVO_AUTH_TOKEN": TOKEN, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


def settled(base: str, ids: list[int]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for start in range(0, len(ids), 200):
        chunk = ids[start : start + 200]
        resp = httpx.get(
            base + "/api/messages",
            params={"ids": ",".join(map(str, chunk)), "limit": 200},
            headers=AUTH,
            timeout=10,
        )
        assert resp.status_code == 200, resp.text
        found.extend(resp.json()["messages"])
    return found


def say(message: str) -> None:
    """Informational output (shown with -s)."""
    print(message, flush=True)  # noqa: T201


# --- the test -------------------------------------------------------------------------------


@pytest.mark.parametrize("database", SERVER_DATABASES, indirect=True)
def test_two_serves_two_workers_hold_every_invariant_under_faults(
    tmp_path: Path, database: str
) -> None:
    why_not = RESTARTS[scheme(database)][1]()
    if why_not:
        if os.environ.get("CI"):
            pytest.fail(f"cannot restart the database server: {why_not}")
        pytest.skip(f"cannot restart the database server: {why_not}")
    t0 = time.monotonic()
    sim_args = ["--speed", "20", "--fail-rate", "0.05", "--undelivered-rate", "0.05"]
    sim_args += ["--dup-rate", "0.1", "--list-per-minute", "600", "--seed", "11"]
    with contextlib.ExitStack() as stack:
        sim = stack.enter_context(simulator_process(tmp_path, *sim_args))
        ports = [free_port(), free_port()]
        bases = [f"http://127.0.0.1:{p}" for p in ports]

        def serve(i: int, name: str) -> Server:
            env = process_env(database, sim, bases[i])
            env.update(PORT=str(ports[i]), SPOOL_DIR=str(tmp_path / f"spool-{i}"))
            return Server(tmp_path, database, name, **env)

        servers = [serve(0, "serve-a"), serve(1, "serve-b")]
        workers = [
            Worker(tmp_path, f"worker-{i + 1}", process_env(database, sim, bases[i]))
            for i in range(2)
        ]

        @stack.callback
        def stop_all() -> None:
            for w in workers:
                w.stop()
            for s in servers:
                s.stop(graceful=True)

        for s in servers:
            s.wait_healthy()

        stop = threading.Event()
        sends, callbacks, watcher = Sends(), Callbacks(), Watcher()
        load = [
            threading.Thread(target=send_load, args=(bases, stop, sends), daemon=True),
            threading.Thread(target=callback_load, args=(bases, stop, callbacks), daemon=True),
        ]
        live_stop = threading.Event()
        live = threading.Thread(target=watch, args=(ports, live_stop, watcher), daemon=True)
        live.start()
        stack.callback(live.join, 10)
        stack.callback(live_stop.set)
        marks = [time.monotonic()]  # the load starts; then each fault

        def until(check: Callable[[], bool], what: str, within: float = 30.0) -> None:
            deadline = time.monotonic() + within
            while not check():
                if time.monotonic() > deadline:
                    pytest.fail(f"not {what} within {within} s")
                time.sleep(0.1)

        until(lambda: bool(watcher.connections), "connected to the live stream")
        assert watcher.connections == [Connection(ports[0], 0)]
        with running(*load):
            try:
                time.sleep(PHASE)
                # 1. serve A dies without a word; restarted on its port and spool a little later.
                marks.append(time.monotonic())
                servers[0].proc.send_signal(signal.SIGKILL)
                servers[0].stop(graceful=False)
                time.sleep(PHASE / 2)
                servers[0] = serve(0, "serve-a-again")
                servers[0].wait_healthy()
                time.sleep(PHASE / 2)
                watcher.drop.set()  # the stream's client leaves B, and resumes on A
                time.sleep(PHASE / 2)
                # 2. worker 1 dies without a word (not restarted).
                marks.append(time.monotonic())
                workers[0].proc.send_signal(signal.SIGKILL)
                workers[0].proc.wait(timeout=10)
                time.sleep(PHASE)
                # 3. the database server restarts: every connection of every process is cut.
                marks.append(time.monotonic())
                restart_database(database)
                wait_database(database)
                t_back = time.monotonic()
                say(f"\ndatabase restarted in {t_back - marks[-1]:.1f} s")
                time.sleep(PHASE / 2)
                watcher.drop.set()
                time.sleep(PHASE / 2)
            finally:
                stop.set()
        marks.append(time.monotonic())
        t_load = time.monotonic() - t0

        # The load is over: every send answered 202, every callback of ours acknowledged.
        assert not sends.odd, sends.odd[:5]
        assert not sends.lost, f"sends never accepted: {sends.lost[:5]}"
        assert not callbacks.lost, f"callbacks never acknowledged: {callbacks.lost[:5]}"
        assert workers[0].proc.returncode == -signal.SIGKILL
        numbers = sorted(sends.ids)
        ids = [sends.ids[n] for n in numbers]
        assert len(set(ids)) == len(ids)  # one message per Idempotency-Key
        # The load went on through every phase (the faults met traffic, not an idle system).
        for begin, end in itertools.pairwise(marks):
            assert any(begin < t < end for t in sends.times), "no send taken in a phase"
            assert any(begin < t < end for t in callbacks.times), "no callback taken in a phase"

        # Every message settles within the bound.
        survivor = servers[1].base
        start = time.monotonic()
        deadline = max(start + SETTLE_WITHIN, t_back + STRANDED_WITHIN)
        found = settled(survivor, ids)
        while not all(m["settled"] for m in found):
            if time.monotonic() > deadline:
                waiting = [m["id"] for m in found if not m["settled"]]
                pytest.fail(
                    f"not settled {time.monotonic() - start:.0f} s after the load: "
                    f"{len(waiting)}, e.g. {explain(database, survivor, waiting[:3])}"
                )
            time.sleep(0.5)
            found = settled(survivor, ids)
        assert len(found) == len(ids)
        t_settle = time.monotonic() - start

        # Spools replayed, the journal applied; then the stream's client catches up.
        for s in servers:
            ready = s.wait_ready()
            assert ready.status_code == 200, ready.text
            assert ready.json()["spool_files"] == 0, ready.text
        cursor, head = wait_projected(database, within=60)
        assert cursor == head
        stored = asyncio.run(_read(database))
        changes = [(i, after) for i, _, _, _, _, before, after in stored.events if after != before]
        changes = [(i, s) for i, s in changes if s is not None]
        deadline = time.monotonic() + 30
        while watcher.last_id < changes[-1][0] and time.monotonic() < deadline:
            time.sleep(0.2)
        live_stop.set()
        live.join(timeout=10)
        assert not live.is_alive()
        stats = httpx.get(sim + "/_simulator/stats", timeout=5).json()
        logs = {s.log_path.name: s.log_text() for s in servers}
        logs.update({w.log_path.name: w.log_path.read_text(errors="replace") for w in workers})
        spooled = sum(
            json.loads(line)["items"]
            for log in logs.values()
            for line in log.splitlines()
            if '"spool.replayed"' in line
        )

    say(
        f"sends={len(ids)} (retried {sends.retried}: {dict(sends.not_accepted)}) "
        f"callbacks acknowledged={len(callbacks.acked)} "
        f"({dict(Counter(r for _, _, r in callbacks.acked.values()))}; refused on the way: "
        f"{dict(callbacks.refused)}) journal={len(stored.journal)} events={len(stored.events)} "
        f"replayed from spools={spooled} "
        f"stream frames={len(watcher.frames)} over "
        f"{[(c.port, c.since, c.replayed) for c in watcher.connections]} "
        f"load {t_load:.0f} s, settled {t_settle:.1f} s later, total {time.monotonic() - t0:.0f} s"
    )

    # Every message sent exactly once, counted at the simulator.
    created = stats["by_destination"]
    assert sorted(created) == [n.lstrip("+") for n in numbers]
    assert set(created.values()) == {1}, {n: c for n, c in created.items() if c != 1}
    assert stats["accepted"] == len(numbers)

    # Every acknowledged callback of ours stored and projected exactly once.
    lost = [n for n in callbacks.acked if n not in stored.nonces]
    assert not lost, f"{len(lost)} acknowledged nonces missing, e.g. {lost[:5]}"
    journaled = Counter((m, s) for _, m, s, _ in stored.journal)
    acked_keys = {(u, s) for u, s, _ in callbacks.acked.values()}
    missing = sorted(k for k in acked_keys if journaled[k] == 0)
    assert not missing, f"{len(missing)} acknowledged callbacks not in the journal: {missing[:5]}"
    assert all(journaled[k] == 1 for k in acked_keys), "a callback journaled twice"
    assert {r for _, _, r in callbacks.acked.values()} <= {"stored", "duplicate"}
    event_keys = Counter(k for _, k, *_ in stored.events)
    assert max(event_keys.values()) == 1, "two events for one dedupe key"
    unprojected = [k for k, _, _, _ in stored.journal if k not in event_keys]
    assert not unprojected, f"{len(unprojected)} journal rows without their event"
    ours = Counter((u, s) for _, _, source, u, s, _, _ in stored.events if source == "callback")
    assert all(ours[k] == 1 for k in acked_keys), "an acknowledged callback without one event"

    # The stream's client missed nothing: every change in the database, in order, once.
    assert not watcher.problems, watcher.problems[:5]
    # It resumed on serve B, from where it was, when serve A died; later resumes replayed what
    # it had missed while away (so ?since= was put to work, not only the live feed).
    assert watcher.connections[1].port == ports[1]
    assert watcher.connections[1].since > 0
    assert len(watcher.connections) >= 3
    assert sum(c.replayed for c in watcher.connections[1:]) > 0
    received = [(f["id"], f["status"]) for f in watcher.frames]
    assert received == changes

    # Nothing went wrong beyond what the faults explain (a dispatcher pass cut short by the
    # restart is logged with its traceback, and retried).
    for name, log in logs.items():
        for event in FORBIDDEN_EVENTS:
            assert f'"{event}"' not in log, f"{event} in {name}"
