"""The composition root on real SQLite and PostgreSQL: what each process opens and closes, and
the CLI's database commands, which go through it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection
from typer.testing import CliRunner

from plivo_tracker import cli
from plivo_tracker.composition import (
    on_database,
    open_service,
    open_worker,
    replay_spool,
    upgrade_database,
    upgrade_sqlite_database,
)
from plivo_tracker.config import Settings, load_settings
from plivo_tracker.db.migrate import head_revision
from plivo_tracker.inbound.committer import CommitterClosed
from plivo_tracker.inbound.spool import Spool
from plivo_tracker.outbound.repository import PauseState, pause_state, resume, set_paused
from plivo_tracker.web.throttle import Throttle
from tests.conftest import callback_fields, callback_item, get_message, new_uuid


async def test_upgrade_database_brings_a_new_database_to_head(tmp_path: Path) -> None:
    settings = load_settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'new.db'}")
    assert await upgrade_database(settings) == head_revision()


async def test_serve_with_workers_migrates_a_new_sqlite_file_synchronously(
    tmp_path: Path,
) -> None:
    settings = load_settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'new' / 'w.db'}")
    upgrade_sqlite_database(settings)  # creates the directory and the file
    upgrade_sqlite_database(settings)  # at head already: nothing to do
    assert await upgrade_database(settings) == head_revision()


async def test_operator_work_runs_in_one_write_transaction(
    make_settings: Callable[..., Settings], db_url: str
) -> None:
    settings = make_settings(database_url=db_url)
    now = datetime.now(UTC)

    def pause(conn: Connection) -> PauseState:
        set_paused(conn, by="operator", reason="maintenance", now=now, next_probe_at=None)
        return pause_state(conn)

    paused = await on_database(settings, pause)
    assert (paused.paused, paused.paused_by, paused.reason) == (True, "operator", "maintenance")
    await on_database(settings, lambda conn: resume(conn, now))
    assert not (await on_database(settings, pause_state)).paused


async def test_replay_spool_commits_and_removes_spooled_callbacks(
    make_settings: Callable[..., Settings], db_url: str
) -> None:
    settings = make_settings(database_url=db_url)
    spool = Spool(settings.spool_dir)
    uuid = new_uuid()
    await spool.write([callback_item(callback_fields(uuid, "sent"))])
    assert await replay_spool(settings) == 1
    assert spool.pending() == []
    assert await replay_spool(settings) == 0


async def test_service_wires_the_routes_context_and_stops_everything(
    make_settings: Callable[..., Settings], db_url: str
) -> None:
    settings = make_settings(database_url=db_url)
    async with open_service(
        settings, throttle=Throttle(settings), migrate=False, dispatch=False
    ) as service:
        ctx = service.ctx
        assert ctx.dispatcher is None  # `worker` sends elsewhere
        assert ctx.hub is not None
        assert ctx.reader is not None
        assert ctx.writer.on_commit == ctx.hub.wake  # every commit wakes the live feed
        uuid = new_uuid()
        await ctx.committer.submit(callback_item(callback_fields(uuid, "sent")))
        assert ctx.projector is not None
        await ctx.projector.settled()  # the 200 means journaled; the projector applies it
        message = await get_message(ctx.engine, uuid)
        assert message is not None
        assert message.status == "sent"
    # Stopped in order: the committer takes no more work once the service has closed.
    with pytest.raises(CommitterClosed):
        await ctx.committer.submit(callback_item(callback_fields(new_uuid(), "sent")))


async def test_service_with_dispatch_runs_the_sending_side(
    make_settings: Callable[..., Settings], db_url: str
) -> None:
    settings = make_settings(database_url=db_url, plivo_auth_id=None, plivo_auth_token=None)
    async with open_service(
        settings, throttle=Throttle(settings), migrate=False, dispatch=True
    ) as service:
        assert service.ctx.dispatcher is service.sending.dispatcher
        assert service.sending.simulator is not None  # simulator mode: no credentials
        assert service.ctx.default_src == service.sending.default_src is not None


async def test_services_on_one_database_dispatch_from_one_leader(
    make_settings: Callable[..., Settings], db_url: str
) -> None:
    """`serve --workers N` (or several servers): every process opens the service with dispatch
    and one of them runs the dispatcher; when it stops, another takes over."""
    settings = make_settings(database_url=db_url, plivo_auth_id=None, plivo_auth_token=None)
    throttle = Throttle(settings)
    async with contextlib.AsyncExitStack() as first, contextlib.AsyncExitStack() as second:
        stacks = [first, second]
        services = [
            await stack.enter_async_context(
                open_service(settings, throttle=throttle, migrate=False, dispatch=True)
            )
            for stack in stacks
        ]
        leaders = [service.ctx.leaders["dispatcher"] for service in services]
        await _until(lambda: all(lead.renewals >= 2 for lead in leaders), "both asked twice")
        assert [lead.leading for lead in leaders].count(True) == 1
        leader = 0 if leaders[0].leading else 1
        other = 1 - leader
        # The other one still takes sends and wakes its own dispatcher (it runs once it leads).
        assert services[other].ctx.dispatcher is services[other].sending.dispatcher
        await stacks[leader].aclose()
        assert not leaders[leader].leading
        await _until(lambda: leaders[other].leading, "handed over")


async def _until(check: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"not {what} within {seconds} s")
        await asyncio.sleep(0.02)


async def test_worker_stops_when_asked(make_settings: Callable[..., Settings], db_url: str) -> None:
    settings = make_settings(database_url=db_url)
    async with open_worker(settings, poll_interval=30.0) as worker:
        worker.stop()
        await worker.run()  # both loops see the stop and end


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db_url: str) -> CliRunner:
    monkeypatch.chdir(tmp_path)  # no .env from the working tree
    for name in ("PLIVO_AUTH_ID", "PLIVO_AUTH_TOKEN", "API_KEYS", "PUBLIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("SPOOL_DIR", str(tmp_path / "spool"))
    return CliRunner()


def test_dispatch_commands_pause_and_resume_sending(cli_env: CliRunner) -> None:
    running = cli_env.invoke(cli.app, ["dispatch", "status"])
    assert running.exit_code == 0, running.output
    assert "running" in running.output
    paused = cli_env.invoke(cli.app, ["dispatch", "pause", "--reason", "carrier outage"])
    assert paused.exit_code == 0, paused.output
    assert "paused" in paused.output
    assert "carrier outage" in paused.output
    resumed = cli_env.invoke(cli.app, ["dispatch", "resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "running" in resumed.output


def test_resolve_of_a_missing_message_fails_with_the_reason(cli_env: CliRunner) -> None:
    result = cli_env.invoke(cli.app, ["resolve", "999999", "--resend"])
    assert result.exit_code == 1
    assert "999999" in result.output


def test_spool_replay_command_with_nothing_spooled(cli_env: CliRunner) -> None:
    result = cli_env.invoke(cli.app, ["spool", "replay"])
    assert result.exit_code == 0, result.output
    assert "replayed 0 callbacks" in result.output
