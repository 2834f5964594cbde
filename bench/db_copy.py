"""`plivo-tracker db copy` SQLite → PostgreSQL or MariaDB on a database of N messages, against a
same-run baseline: the same rows moved with one plain COPY (PostgreSQL) or one executemany
(MariaDB) per table (no batches, no resume point, no progress, no verification).

    python bench/db_copy.py                                   # 100,000 messages
    python bench/db_copy.py --messages 20000 --batch-size 2000
    python bench/db_copy.py --pg postgresql+asyncpg://127.0.0.1:5432/plivo_bench_copy
    python bench/db_copy.py --pg mysql+asyncmy://root@127.0.0.1:3306/plivo_bench_copy  # MariaDB
    python bench/db_copy.py --write docs/benchmarks.md        # append a dated section

1. Seeds a SQLite file with N messages and everything around them (tests/copy_seed.py: per
   message of ours three status events, three journal rows, three nonces, an attempt and an
   outbox row; inbound and callback-only messages, multipart parts, rollups, quarantine,
   idempotency keys, opt-outs...). Kept in the temp dir between runs of the same N (--reseed).
2. The command itself, as an operator runs it: `plivo-tracker db copy --from SQLITE --to PG`
   in a subprocess into a new PostgreSQL database (its schema created by the command), not a
   TTY (no bars). Wall time, and the copy and verification times it prints.
3. The baseline, into another new database migrated first: every table read through the
   same SQLAlchemy types and written with one asyncpg COPY per table, one transaction each.

Printed: rows per table, times, messages/s and rows/s for both. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests/copy_seed.py

from callbacks import append_section, git_commit, load_average, machine  # noqa: E402

DEFAULT_PG = "postgresql+asyncpg://127.0.0.1:5432/plivo_bench_copy"


async def recreate(url: str) -> None:
    if url.startswith("mysql"):
        from sqlalchemy.ext.asyncio import create_async_engine

        base, _, query = url.partition("?")
        name = base.rsplit("/", 1)[1]
        admin = create_async_engine(base.rsplit("/", 1)[0] + "/mysql?" + query)
        try:
            async with admin.connect() as conn:
                await conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
                await conn.exec_driver_sql(f"CREATE DATABASE `{name}`")
        finally:
            await admin.dispose()
        return
    import asyncpg

    dsn = "postgresql://" + url.split("://", 1)[1]
    name = dsn.rsplit("/", 1)[1]
    admin = await asyncpg.connect(dsn.rsplit("/", 1)[0] + "/postgres", timeout=10)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


async def counts(url: str) -> dict[str, int]:
    from sqlalchemy import func, select

    from plivo_tracker.db.copy import tables
    from plivo_tracker.db.engine import make_engine

    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return {
                t.name: int((await conn.execute(select(func.count()).select_from(t))).scalar_one())
                for t in tables()
            }
    finally:
        await engine.dispose()


async def baseline(source: str, target: str) -> float:
    """One plain COPY (MariaDB: one executemany) per table of the rows read through the
    schema's types; seconds."""
    from sqlalchemy import select

    from plivo_tracker.db.copy import tables
    from plivo_tracker.db.engine import make_engine
    from plivo_tracker.db.migrate import upgrade

    src, tgt = make_engine(source, read_only=True), make_engine(target)
    try:
        await upgrade(tgt)
        started = time.perf_counter()
        async with src.connect() as s, tgt.connect() as t:
            for table in tables():
                rows = (await s.execute(select(table))).all()
                async with t.begin():
                    await t.exec_driver_sql(f"DELETE FROM {table.name}")  # cursors' row
                    if target.startswith("mysql"):
                        if rows:
                            keys = [c.key for c in table.columns]
                            await t.execute(
                                table.insert(), [dict(zip(keys, r, strict=True)) for r in rows]
                            )
                        continue
                    raw = await t.get_raw_connection()
                    driver = raw.driver_connection
                    assert driver is not None
                    await driver.copy_records_to_table(
                        table.name, records=rows, columns=[c.name for c in table.columns]
                    )
        return time.perf_counter() - started
    finally:
        await src.dispose()
        await tgt.dispose()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--batch-size", type=int, default=5000)
    p.add_argument("--pg", default=DEFAULT_PG, help="scratch database (dropped and re-created)")
    p.add_argument("--reseed", action="store_true", help="seed the SQLite file again")
    p.add_argument("--write", type=Path, help="append the results to this Markdown file")
    args = p.parse_args()

    from tests.copy_seed import seed

    path = Path(tempfile.gettempdir()) / f"plivo-bench-copy-{args.messages}.db"
    source = f"sqlite+aiosqlite:///{path}"
    if args.reseed or not path.exists():
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        started = time.perf_counter()
        seed(source, args.messages)
        print(f"seeded {args.messages:,} messages in {time.perf_counter() - started:.1f} s: {path}")
    rows = asyncio.run(counts(source))
    total = sum(rows.values())
    print(f"source: {total:,} rows, {path.stat().st_size / 1e6:.0f} MB")
    for name, n in sorted(rows.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<18} {n:>10,}")

    # 2. the command
    asyncio.run(recreate(args.pg))
    env = {**os.environ, "LOG_FORMAT": "json"}
    command = [sys.executable, "-m", "plivo_tracker", "db", "copy", "--from", source]
    command += ["--to", args.pg, "--batch-size", str(args.batch_size)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        print(done.stdout, done.stderr)
        return 1
    m = re.search(r"copied ([\d,]+) rows in ([\d.]+) s.*verified in ([\d.]+) s", done.stdout)
    assert m, done.stdout
    copied, copy_s, verify_s = int(m[1].replace(",", "")), float(m[2]), float(m[3])
    assert copied == total, (copied, total)
    print(f"\ndb copy: {wall:.1f} s wall; copy {copy_s:.1f} s, verification {verify_s:.1f} s")

    # 3. the baseline
    asyncio.run(recreate(args.pg))
    base_s = asyncio.run(baseline(source, args.pg))
    assert asyncio.run(counts(args.pg)) == rows
    asyncio.run(recreate(args.pg))

    n = args.messages
    lines = [
        "| | time | messages/s | rows/s |",
        "| --- | --- | --- | --- |",
        f"| baseline: one plain {'executemany' if args.pg.startswith('mysql') else 'COPY'} "
        f"per table, no verification | {base_s:.1f} s | "
        f"{n / base_s:,.0f} | {total / base_s:,.0f} |",
        f"| `db copy`: the copy (batches of {args.batch_size:,}, resumable) | {copy_s:.1f} s | "
        f"{n / copy_s:,.0f} | {total / copy_s:,.0f} |",
        f"| `db copy`: verification (counts + SHA-256 of both sides) | {verify_s:.1f} s | "
        f"{n / verify_s:,.0f} | {total / verify_s:,.0f} |",
        f"| `db copy`: the whole command, wall clock | {wall:.1f} s | {n / wall:,.0f} | "
        f"{total / wall:,.0f} |",
    ]
    print("\n" + "\n".join(lines))
    if args.write:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        section = (
            f"### Run {when} (commit {git_commit()})\n\n"
            f"`python bench/db_copy.py --messages {n} --batch-size {args.batch_size}` into "
            f"{'MariaDB' if args.pg.startswith('mysql') else 'PostgreSQL'}; "
            f"{machine()}; load {load_average()}. SQLite file {path.stat().st_size / 1e6:.0f} MB, "
            f"{total:,} rows in {len(rows)} tables "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(rows.items(), key=lambda kv: -kv[1])[:5])
            + ", ...\n\n"
            + "\n".join(lines)
            + "\n"
        )
        append_section(args.write, section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
