"""Ingestion without HTTP, in two phases: journal appends, then the projector applying them.

1. *Append*: parsed, verified reports submitted to the group committer by N concurrent tasks,
   each awaiting its durable commit — since docs/adr/0011 that is the whole acknowledgement:
   nonces + one journal row per report. `bench/callbacks.py` minus this is the HTTP side.
2. *Project*: with the journal full and nothing else running, `Projector.drain()` applies it
   (passes of up to `--batch` rows after the cursor: placeholders, decisions, events, message
   rows, cursor, one transaction each): reports applied per second.

Reports come three per message (queued, sent, delivered, each message's three 500 messages
apart, as in bench/live.py), so the projector updates existing messages as well as creating
them. Prints one block per database.

    .venv/bin/python bench/ingest.py [--items 20000] [--concurrency 50] [--batch 2000]
        [--database-url postgresql+asyncpg://127.0.0.1:5432/plivo_bench_ingest]

A PostgreSQL database is created if missing; use a fresh one (the projector would also apply
whatever an earlier run left after its cursor).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode

from callbacks import ensure_postgres_database, is_postgres
from plivo_tracker.db.engine import make_engine, make_reader, make_writer
from plivo_tracker.db.migrate import upgrade
from plivo_tracker.inbound.committer import GroupCommitter
from plivo_tracker.inbound.items import CallbackItem, Outcome, make_item
from plivo_tracker.messages.projector import BATCH, Projection, Projector

BLOCK = 500  # messages per block: a message's three reports are BLOCK reports apart


def _items(n: int) -> list[CallbackItem]:
    items: list[CallbackItem] = []
    run = time.time_ns()
    while len(items) < n:
        block = [str(uuid.uuid4()) for _ in range(BLOCK)]
        for seq, status in enumerate(("queued", "sent", "delivered"), start=1):
            for msg in block:
                fields = {
                    "MessageUUID": msg,
                    "Status": status,
                    "Sequence": str(seq),
                    "To": "14155550101",
                    "From": "14155550100",
                    "Type": "sms",
                    "Units": "1",
                    "MCC": "310",
                    "MNC": "004",
                    "ErrorCode": "",
                }
                items.append(
                    make_item(
                        received_at=datetime.now(UTC),
                        method="POST",
                        path="/plivo/callback",
                        query="",
                        headers={"content-type": "application/x-www-form-urlencoded"},
                        body=urlencode(fields).encode(),
                        fields={k: [v] for k, v in fields.items()},
                        nonce=f"{run}{len(items):08d}",
                        scheme="v3",
                    )
                )
    return items[:n]


@dataclass
class Result:
    appended: int
    append_seconds: float
    applied: int = 0
    project_seconds: float = 0.0
    passes: list[float] = field(default_factory=list)  # seconds per pass that applied rows
    outcomes: dict[str, int] = field(default_factory=dict)


async def run(url: str, n: int, concurrency: int, batch: int) -> Result:
    engine = make_engine(url)
    await upgrade(engine)
    writer = make_writer(engine)
    reader = make_reader(engine)
    # No projector is wired to the writer (on_journal): it must not run during the append phase.
    committer = GroupCommitter(engine, writer=writer)
    committer.start()
    items = _items(n)
    pending = iter(items)
    outcomes: dict[str, int] = {}

    async def worker() -> None:
        for item in pending:
            outcome: Outcome = await committer.submit(item)
            outcomes[outcome.value] = outcomes.get(outcome.value, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result = Result(n, time.perf_counter() - started, outcomes=outcomes)
    await committer.stop()

    # Phase 2: the projector drains the journal, pass after pass, timed.
    projector = Projector(writer, reader, batch=batch)
    project_once = projector.project_once

    async def timed_pass(limit: int | None = None) -> Projection:
        t = time.perf_counter()
        done: Projection = await project_once(limit)
        if done.applied:
            result.passes.append(time.perf_counter() - t)
        return done

    projector.project_once = timed_pass  # type: ignore[method-assign]
    started = time.perf_counter()
    result.applied = await projector.drain()
    result.project_seconds = time.perf_counter() - started
    await reader.close()
    await writer.close()
    await engine.dispose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--batch", type=int, default=BATCH, help=f"rows per pass ({BATCH})")
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{tmp}/ingest.db"
        if is_postgres(url):
            asyncio.run(ensure_postgres_database(url))
        r = asyncio.run(run(url, args.items, args.concurrency, args.batch))
    label = "PostgreSQL" if is_postgres(url) else "SQLite"
    passes = sorted(r.passes)
    print(
        f"{label} append:  {r.appended / r.append_seconds:,.0f} reports/s journaled durably "
        f"({r.appended:,} reports, {args.concurrency} concurrent submitters, "
        f"{r.append_seconds:.1f} s; outcomes {r.outcomes})"
    )
    print(
        f"{label} project: {r.applied / r.project_seconds:,.0f} reports/s applied by "
        f"Projector.drain() ({r.applied:,} journal rows in {len(passes)} passes of up to "
        f"{args.batch}, {r.project_seconds:.1f} s"
        + (
            f"; per pass median {statistics.median(passes) * 1000:.0f} ms, "
            f"max {passes[-1] * 1000:.0f} ms)"
            if passes
            else ")"
        )
    )


if __name__ == "__main__":
    main()
