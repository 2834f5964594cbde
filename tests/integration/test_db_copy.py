"""`plivo-tracker db copy` on real SQLite files and real PostgreSQL and MariaDB servers: a round
trip of a database filled by the product itself (sends, callbacks, an inbound STOP, emoji and
CJK texts) plus rows of every table; resume after an interruption (a test hook, and `kill -9`);
the refusals; ids continuing after the copy; a server back to SQLite; verification catching a
difference."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import func, inspect, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from plivo_tracker import cli
from plivo_tracker.app import create_app
from plivo_tracker.composition import copy_between
from plivo_tracker.config import Settings
from plivo_tracker.db.copy import (
    CopyInterrupted,
    byte_order_key,
    checksum,
    same_database,
    tables,
    verify,
)
from plivo_tracker.db.engine import make_engine
from plivo_tracker.db.migrate import upgrade, upgrade_sqlite
from plivo_tracker.messages.models import messages, quarantine
from plivo_tracker.simulator.scenario import ScenarioConfig
from tests.conftest import AUTH, create_database, drop_database, projecting_client
from tests.copy_seed import seed

SEEDED = 3000  # messages written straight into the source (several batches of every big table)


def _sqlite(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def _server_empty(kind: str) -> Iterator[str]:
    url = create_database(kind, f"plivo_tracker_copy_{os.getpid()}_{secrets.token_hex(4)}")
    yield url
    drop_database(url)


@pytest.fixture(params=["postgresql", "mariadb"])
def server_empty(request: pytest.FixtureRequest) -> Iterator[str]:
    """A PostgreSQL or MariaDB database without a schema (dropped afterwards)."""
    yield from _server_empty(request.param)


@pytest.fixture(scope="module")
def seeded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("copy-source") / "source.db"
    seed(_sqlite(path), SEEDED)
    return path


@pytest.fixture
def source(seeded_template: Path, tmp_path: Path) -> str:
    """A SQLite file with SEEDED messages and rows in every table."""
    path = tmp_path / "source.db"
    path.write_bytes(seeded_template.read_bytes())
    return _sqlite(path)


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (no schema): a new SQLite file, or a new PostgreSQL or MariaDB
    database."""
    if request.param == "sqlite":
        yield _sqlite(tmp_path / "target" / "copy.db")
        return
    yield from _server_empty(request.param)


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    return CliRunner()


async def _rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows as Python values, in byte order of their keys (read through the
    schema's types: aware datetimes, bools, bytes)."""
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return {
                t.name: [
                    tuple(r)
                    for r in await conn.execute(
                        select(t).order_by(*byte_order_key(conn.dialect, t))
                    )
                ]
                for t in tables()
            }
    finally:
        await engine.dispose()


def _file_digest(url: str) -> str:
    path = Path(url.split(":///", 1)[1])
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- the product fills the source -------------------------------------------------------------


async def _fill_through_the_product(url: str, make_settings: Callable[..., Settings]) -> None:
    """serve's app in process, simulator mode: sends (one with an Idempotency-Key and emoji),
    their signed callbacks, an inbound STOP (an opt-out) and a reply; everything applied."""
    settings = make_settings(
        database_url=url, plivo_auth_id=None, plivo_auth_token=None, plivo_mps=1000
    )
    scenario = ScenarioConfig(speed=200, undelivered_rate=0.2)
    app = create_app(settings, migrate=True, loopback_callbacks=True, scenario=scenario)
    async with LifespanManager(app), projecting_client(app, headers=AUTH) as client:
        resp = await client.post(
            "/api/messages",
            json={"to": ["+14155550101", "+14155550102"], "text": "Grüße 😀 — 验证码 482193"},
            headers={"Idempotency-Key": "copy-test-key-1"},
        )
        assert resp.status_code == 202, resp.text
        ids = [m["id"] for m in resp.json()["messages"]]
        sim = app.state.sending.simulator
        await sim.receive("14155550109", "14155550100", "STOP")
        await sim.receive("14155550108", "14155550100", "Hello 👋 là-bas")
        async with asyncio.timeout(20):
            while True:
                shown = [(await client.get(f"/api/messages/{i}")).json() for i in ids]
                opted = (await client.get("/api/opt-outs/+14155550109")).json()
                if all(m["status"] in ("delivered", "undelivered") for m in shown) and opted.get(
                    "opted_out"
                ):
                    break
                await asyncio.sleep(0.05)
        await app.state.ctx.projector.settled()


async def _max_id(url: str) -> int:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(select(func.max(messages.c.id)))).scalar_one() or 0)
    finally:
        await engine.dispose()


async def _send_after_copy(url: str, make_settings: Callable[..., Settings]) -> list[int]:
    """The copied database in use: a new send, its callbacks (new events, journal rows,
    nonces) and the projector; returns the new messages' ids."""
    settings = make_settings(
        database_url=url, plivo_auth_id=None, plivo_auth_token=None, plivo_mps=1000
    )
    app = create_app(
        settings, migrate=False, loopback_callbacks=True, scenario=ScenarioConfig(speed=200)
    )
    async with LifespanManager(app), projecting_client(app, headers=AUTH) as client:
        resp = await client.post("/api/messages", json={"to": ["+14155550103"], "text": "after"})
        assert resp.status_code == 202, resp.text
        ids = [int(m["id"]) for m in resp.json()["messages"]]
        async with asyncio.timeout(20):
            while True:
                shown = (await client.get(f"/api/messages/{ids[0]}")).json()
                if shown["status"] == "delivered":
                    break
                await asyncio.sleep(0.05)
        # the copied opt-out still refuses sends
        refused = await client.post("/api/messages", json={"to": ["+14155550109"], "text": "x"})
        assert refused.status_code == 422
    return ids


def test_round_trip_to_a_server_with_the_product_before_and_after(
    tmp_path: Path,
    server_empty: str,
    runner: CliRunner,
    make_settings: Callable[..., Settings],
) -> None:
    source = _sqlite(tmp_path / "live.db")
    asyncio.run(_fill_through_the_product(source, make_settings))
    seed(source, SEEDED, first_id=asyncio.run(_max_id(source)) + 1)
    before = asyncio.run(_rows(source))
    assert [name for name, rows in before.items() if not rows] == []  # every table has rows
    digest = _file_digest(source)

    result = runner.invoke(cli.app, ["db", "copy", "--from", source, "--to", server_empty])
    assert result.exit_code == 0, result.output
    assert "every table matches" in result.output
    assert "schema created" in result.output
    assert _file_digest(source) == digest  # the source was only read

    after = asyncio.run(_rows(server_empty))
    for name, rows in before.items():
        assert after[name] == rows, name  # the same Python values, row for row
    body = [c.name for c in quarantine.columns].index("body")
    assert all(isinstance(row[body], bytes) for row in after["quarantine"])

    # Ids continue after the copied ones (PostgreSQL's sequences moved past them, MariaDB's
    # AUTO_INCREMENT by itself).
    top = asyncio.run(_max_id(server_empty))
    new = asyncio.run(_send_after_copy(server_empty, make_settings))
    assert new == [top + 1]


def test_interrupted_copy_resumes_with_equal_checksums(
    source: str, target: str, runner: CliRunner
) -> None:
    with pytest.raises(CopyInterrupted):
        asyncio.run(
            copy_between(
                source, target, batch_size=700, resume=False, force=False, stop_after_batches=9
            )
        )
    partial = asyncio.run(_rows(target))
    assert (
        0
        < sum(len(r) for r in partial.values())
        < sum(len(r) for r in asyncio.run(_rows(source)).values())
    )
    refused = runner.invoke(cli.app, ["db", "copy", "--from", source, "--to", target])
    assert refused.exit_code == 2
    assert "already holds data" in refused.output
    assert "--resume" in refused.output
    assert refused.output.strip().count("\n") == 0  # one line

    result = asyncio.run(copy_between(source, target, batch_size=700, resume=True, force=False))
    assert result.ok, [c for c in result.checks if not c.ok]
    assert sum(result.resumed_from.values()) > 0
    totals = {c.name: c.source_rows for c in result.checks}
    # small tables a new schema has rows in: copied whole each time
    seeded_again = {"cursors", "order_locks"}
    for name, total in totals.items():
        if name not in seeded_again:
            assert result.resumed_from[name] + result.copied[name] == total, name
    assert asyncio.run(_rows(target)) == asyncio.run(_rows(source))


async def _drop_tail(url: str, names: tuple[str, ...], k: int) -> None:
    """Delete the last k rows (byte order of the key) of each table: as if the copy had
    stopped there."""
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            for table in (t for t in tables() if t.name in names):
                key = list(table.primary_key.columns)
                order = [c.desc() for c in byte_order_key(conn.dialect, table)]
                tail = (await conn.execute(select(*key).order_by(*order).limit(k))).all()
                for row in tail:
                    await conn.execute(
                        table.delete().where(*(c == v for c, v in zip(key, row, strict=True)))
                    )
    finally:
        await engine.dispose()


def test_resume_continues_after_composite_and_text_keys(source: str, target: str) -> None:
    """Tables stopped part-way whose keys are text (nonces, idempotency keys) or composite
    (the rollups, carriers with two text columns): --resume copies exactly the missing rows."""
    assert asyncio.run(copy_between(source, target, batch_size=5000, resume=False, force=False)).ok
    names = ("callback_nonces", "idempotency_keys", "stats_status", "stats_carriers")
    asyncio.run(_drop_tail(target, names, 17))
    result = asyncio.run(copy_between(source, target, batch_size=10, resume=True, force=False))
    assert result.ok, [c for c in result.checks if not c.ok]
    assert {n: result.copied[n] for n in names} == dict.fromkeys(names, 17)
    seeded_again = ("cursors", "order_locks")
    assert sum(v for n, v in result.copied.items() if n not in names + seeded_again) == 0


def test_refusals_and_force(source: str, target: str, runner: CliRunner) -> None:
    first = runner.invoke(cli.app, ["db", "copy", "--from", source, "--to", target])
    assert first.exit_code == 0, first.output
    again = runner.invoke(cli.app, ["db", "copy", "--from", source, "--to", target])
    assert again.exit_code == 2
    assert "already holds data" in again.output
    forced = runner.invoke(
        cli.app, ["db", "copy", "--from", source, "--to", target, "--force", "--batch-size", "999"]
    )
    assert forced.exit_code == 0, forced.output
    assert "every table matches" in forced.output
    both = runner.invoke(
        cli.app, ["db", "copy", "--from", source, "--to", target, "--force", "--resume"]
    )
    assert both.exit_code == 2


def test_a_target_migrated_by_db_upgrade_counts_as_empty(
    source: str, tmp_path: Path, runner: CliRunner
) -> None:
    """The schema made first (`db upgrade`, as a deployment may): its projector cursor row is
    not data; the copy replaces it with the source's."""
    target_url = _sqlite(tmp_path / "upgraded.db")
    upgrade_sqlite(target_url)
    result = runner.invoke(cli.app, ["db", "copy", "--from", source, "--to", target_url])
    assert result.exit_code == 0, result.output
    assert "schema created" not in result.output
    assert "every table matches" in result.output


def test_refuses_the_same_database_and_a_source_not_at_head(
    tmp_path: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "one.db"
    seed(_sqlite(path), 10)
    for spelling in (f"sqlite:///{path}", "sqlite:///one.db", _sqlite(path)):
        same = runner.invoke(cli.app, ["db", "copy", "--from", _sqlite(path), "--to", spelling])
        assert same.exit_code == 2, same.output
        assert "same database" in same.output
    monkeypatch.setenv("DATABASE_URL", _sqlite(path))  # --from defaults to DATABASE_URL
    same = runner.invoke(cli.app, ["db", "copy", "--to", f"sqlite:///{path}"])
    assert "same database" in same.output

    old = tmp_path / "old.db"
    upgrade_sqlite(_sqlite(old), "0009")
    behind = runner.invoke(
        cli.app, ["db", "copy", "--from", _sqlite(old), "--to", _sqlite(tmp_path / "new.db")]
    )
    assert behind.exit_code == 2
    assert "db upgrade" in behind.output
    assert behind.output.strip().count("\n") == 0
    assert not (tmp_path / "new.db").exists()

    missing = runner.invoke(
        cli.app,
        ["db", "copy", "--from", _sqlite(tmp_path / "nope.db"), "--to", _sqlite(tmp_path / "n.db")],
    )
    assert missing.exit_code == 1
    assert "--from" in missing.output
    assert not (tmp_path / "nope.db").exists()  # a read-only open creates nothing


def test_a_server_back_to_sqlite(source: str, server_empty: str, tmp_path: Path) -> None:
    there = asyncio.run(
        copy_between(source, server_empty, batch_size=1000, resume=False, force=False)
    )
    assert there.ok
    back_url = _sqlite(tmp_path / "back.db")
    back = asyncio.run(
        copy_between(server_empty, back_url, batch_size=1000, resume=False, force=False)
    )
    assert back.ok
    assert [c.source_sum for c in back.checks] == [c.source_sum for c in there.checks]
    assert asyncio.run(_rows(back_url)) == asyncio.run(_rows(source))


async def test_verification_sees_a_changed_microsecond_and_a_missing_row(
    source: str, tmp_path: Path
) -> None:
    target_url = _sqlite(tmp_path / "copy.db")
    assert (await copy_between(source, target_url, batch_size=5000, resume=False, force=False)).ok
    engine: AsyncEngine = make_engine(target_url)
    src = make_engine(source)
    try:
        async with engine.begin() as conn:
            first = (await conn.execute(select(messages).where(messages.c.id == 1))).one()
            await conn.execute(
                update(messages)
                .where(messages.c.id == 1)
                .values(
                    created_at=first.created_at.replace(
                        microsecond=(first.created_at.microsecond + 1) % 1_000_000
                    )
                )
            )
            await conn.execute(quarantine.delete().where(quarantine.c.id == 1))
        bad = {c.name for c in await verify(src, engine) if not c.ok}
        assert bad == {"messages", "quarantine"}
    finally:
        await engine.dispose()
        await src.dispose()


async def test_every_table_of_a_migrated_database_is_copied(tmp_path: Path) -> None:
    engine = make_engine(_sqlite(tmp_path / "m.db"))
    try:
        await upgrade(engine)
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    finally:
        await engine.dispose()
    assert {t.name for t in tables()} == names - {"alembic_version"}


def test_checksum_tells_apart_what_normalising_could_merge() -> None:
    table = messages
    width = len(table.columns)

    def one(**values: Any) -> str:
        row = [values.get(c.name) for c in table.columns]
        assert len(row) == width
        return checksum(table, [row])[1]

    assert len({one(text=None), one(text=""), one(text="None"), one(units=0)}) == 4
    assert one(has_conflict=True) != one(has_conflict=1)
    assert checksum(table, [])[0] == 0


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("postgresql+asyncpg://u:p@localhost/db", "postgresql+asyncpg://127.0.0.1:5432/db", True),
        ("postgresql+asyncpg://db-host/db", "postgresql+asyncpg://other@DB-HOST:5432/db", True),
        ("postgresql+asyncpg://db-host/db", "postgresql+asyncpg://db-host/db2", False),
        ("postgresql+asyncpg://db-host/db", "postgresql+asyncpg://db-host:5433/db", False),
        ("sqlite+aiosqlite:///./x/../a.db", "sqlite+aiosqlite:///a.db", True),
    ],
)
def test_which_urls_name_the_same_database(a: str, b: str, same: bool) -> None:
    assert same_database(a, b) is same


@pytest.mark.slow
def test_copy_killed_mid_way_resumes(source: str, server_empty: str, tmp_path: Path) -> None:
    """`kill -9` of the CLI in the middle of the copy; run again with --resume."""
    env = {**os.environ, "DATABASE_URL": source}
    args = [sys.executable, "-m", "plivo_tracker", "db", "copy", "--to", server_empty]
    proc = subprocess.Popen(
        [*args, "--batch-size", "50"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while asyncio.run(_count_messages(server_empty)) < 500:
            assert proc.poll() is None, "the copy ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert asyncio.run(_count_messages(server_empty)) < SEEDED
    resumed = subprocess.run(
        [*args, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "every table matches" in resumed.stdout
    assert "resumed" in resumed.stdout


async def _count_messages(url: str) -> int:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            if "messages" not in names:
                return 0
            return int(
                (await conn.execute(select(func.count()).select_from(messages))).scalar_one()
            )
    except Exception:  # noqa: BLE001 - the schema is being created
        return 0
    finally:
        await engine.dispose()
