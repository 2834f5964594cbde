"""Group-commit throughput without HTTP: how many callbacks/s the committer itself stores.

Splits the callback benchmark's cost in two: this number is the database side alone (parsed,
verified items submitted by N concurrent tasks, each awaiting its durable commit), so
`bench/callbacks.py` minus this is the HTTP side. Prints one line per database.

    .venv/bin/python bench/ingest.py [--items 20000] [--concurrency 50]
        [--database-url postgresql+asyncpg://127.0.0.1:5432/plivo_bench]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from datetime import UTC, datetime
from urllib.parse import urlencode

from plivo_tracker.db.engine import make_engine
from plivo_tracker.db.migrate import upgrade
from plivo_tracker.inbound.committer import GroupCommitter
from plivo_tracker.inbound.items import CallbackItem, make_item


def _items(n: int) -> list[CallbackItem]:
    items = []
    for i in range(n):
        fields = {
            "MessageUUID": str(uuid.uuid4()),
            "Status": ("queued", "sent", "delivered")[i % 3],
            "Sequence": str(i % 3 + 1),
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
                nonce=f"{time.time_ns()}{i:08d}",
                scheme="v3",
            )
        )
    return items


async def run(url: str, n: int, concurrency: int) -> tuple[float, float]:
    engine = make_engine(url)
    await upgrade(engine)
    committer = GroupCommitter(engine)
    committer.start()
    items = _items(n)
    pending = iter(items)

    async def worker() -> None:
        for item in pending:
            await committer.submit(item)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await committer.stop()
    await engine.dispose()
    return n / elapsed, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{tmp}/ingest.db"
        rate, elapsed = asyncio.run(run(url, args.items, args.concurrency))
    label = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    print(
        f"{label}: {rate:,.0f} callbacks/s committed durably "
        f"({args.items:,} items, {args.concurrency} concurrent submitters, {elapsed:.1f} s)"
    )


if __name__ == "__main__":
    main()
