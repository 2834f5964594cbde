"""Shared fixtures: settings factory, databases (real SQLite, PostgreSQL and MariaDB), signed
requests.

PostgreSQL tests use the local server at postgresql://127.0.0.1:5432/test and MariaDB tests the
one at 127.0.0.1:3306 (root, no password), each with a fresh database per run. When CI is set
they fail (never skip) if the server is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest
import uvicorn
from asgi_lifespan import LifespanManager
from sqlalchemy import Connection, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from plivo_tracker.app import create_app
from plivo_tracker.config import Settings, load_settings
from plivo_tracker.db.engine import make_engine, make_writer
from plivo_tracker.db.migrate import upgrade
from plivo_tracker.inbound.items import CallbackItem, make_item
from plivo_tracker.inbound.routes import CallbackEndpoint
from plivo_tracker.messages.models import (
    callback_nonces,
    dispatch_state,
    idempotency_keys,
    journal,
    leases,
    message_parts,
    messages,
    outbox,
    quarantine,
    rate_limits,
    send_attempts,
    stats_carriers,
    stats_errors,
    stats_latency,
    stats_status,
    status_events,
)
from plivo_tracker.messages.projector import project_pending
from plivo_tracker.messages.rollups import Deltas
from plivo_tracker.messages.schemas import Message
from plivo_tracker.messages.service import get_message as read_message
from plivo_tracker.optouts.models import opt_out_events, opt_outs
from plivo_tracker.plivo.client import PlivoClient
from plivo_tracker.plivo.signature import signed_headers
from plivo_tracker.simulator.api import SimulatedPlivo, create_simulator_app
from plivo_tracker.simulator.scenario import ScenarioConfig

PG_ADMIN_DSN = os.environ.get("PLIVO_TRACKER_TEST_PG", "postgresql://127.0.0.1:5432/test")
MARIADB_ADMIN_URL = os.environ.get(
    "PLIVO_TRACKER_TEST_MARIADB", "mysql+asyncmy://root@127.0.0.1:3306/test?charset=utf8mb4"
)
# Every database a fixture can hand out, in the order tests are parametrized.
DATABASES = ["sqlite", "postgresql", "mariadb"]
AUTH_ID = "MAXXXXXXXXXXXXXXXXXX"
TOKEN = "account-token-TEST"
MAIN_TOKEN = "main-token-TEST"
OLD_TOKEN = "retired-token-TEST"
BASE_URL = "https://hooks.example.com"
# Credentials are set by default, so API keys are required (config.api_keys_problem).
API_KEY = "test-api-key-0123456789abcdefghijklmnop"
AUTH = {"X-API-Key": API_KEY}
# The host names test clients use: httpx's ASGI default, the public URL's and loopback.
TEST_HOSTS = "testserver,hooks.example.com,localhost,127.0.0.1,::1"
ALL_TABLES = (
    status_events,
    message_parts,
    quarantine,
    callback_nonces,
    send_attempts,
    outbox,
    idempotency_keys,
    rate_limits,
    dispatch_state,
    leases,
    journal,
    messages,
    opt_outs,
    opt_out_events,
    # Kept by the projector: emptied with the messages they count.
    stats_status,
    stats_errors,
    stats_carriers,
    stats_latency,
)


def _pg_dsn(dbname: str) -> str:
    return PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + dbname


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _pg_create(name: str) -> None:
    await _pg_admin(f'CREATE DATABASE "{name}"')


async def _pg_drop(name: str) -> None:
    await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _migrate(url: str) -> None:
    engine = make_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


def create_pg_database(name: str) -> str:
    """Create an empty PostgreSQL database; returns its SQLAlchemy URL. The one place that
    decides what a missing server means: fail under CI, skip on a machine without one."""
    try:
        asyncio.run(_pg_create(name))
    except (OSError, asyncpg.PostgresError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {PG_ADMIN_DSN} is required under CI: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_DSN}: {exc}")
    return "postgresql+asyncpg://" + _pg_dsn(name).split("://", 1)[1]


def new_pg_database() -> str:
    """Create and migrate a fresh PostgreSQL database; returns its SQLAlchemy URL."""
    name = f"plivo_tracker_test_{os.getpid()}_{secrets.token_hex(4)}"
    url = create_pg_database(name)
    asyncio.run(_migrate(url))
    return url


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    url = new_pg_database()
    yield url
    asyncio.run(_pg_drop(url.rsplit("/", 1)[1]))


async def _mariadb_admin(sql: str) -> None:
    engine = create_async_engine(MARIADB_ADMIN_URL, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql(sql)
    finally:
        await engine.dispose()


def _mariadb_url(name: str) -> str:
    base, _, query = MARIADB_ADMIN_URL.partition("?")
    return base.rsplit("/", 1)[0] + "/" + name + ("?" + query if query else "")


def create_mariadb_database(name: str) -> str:
    """Create an empty MariaDB database; returns its SQLAlchemy URL (fails under CI when the
    server is down, skips elsewhere)."""
    try:
        asyncio.run(_mariadb_admin(f"CREATE DATABASE `{name}`"))
    except (OSError, DBAPIError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"MariaDB at {MARIADB_ADMIN_URL} is required under CI: {exc}")
        pytest.skip(f"MariaDB not reachable at {MARIADB_ADMIN_URL}: {exc}")
    return _mariadb_url(name)


def drop_mariadb_database(url: str) -> None:
    name = url.partition("?")[0].rsplit("/", 1)[1]
    asyncio.run(_mariadb_admin(f"DROP DATABASE IF EXISTS `{name}`"))


def create_database(kind: str, name: str) -> str:
    """An empty server database of `kind` ("postgresql" or "mariadb"); its SQLAlchemy URL."""
    if kind == "mariadb":
        return create_mariadb_database(name)
    return create_pg_database(name)


def drop_database(url: str) -> None:
    if url.startswith("mysql"):
        drop_mariadb_database(url)
    else:
        asyncio.run(_pg_drop(url.rsplit("/", 1)[1]))


def new_mariadb_database() -> str:
    """Create and migrate a fresh MariaDB database; returns its SQLAlchemy URL."""
    url = create_mariadb_database(f"plivo_tracker_test_{os.getpid()}_{secrets.token_hex(4)}")
    asyncio.run(_migrate(url))
    return url


@contextlib.contextmanager
def server_database(kind: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL or MariaDB database for one test, dropped afterwards."""
    url = new_pg_database() if kind == "postgresql" else new_mariadb_database()
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture(scope="session")
def mariadb_url() -> Iterator[str]:
    url = create_mariadb_database(f"plivo_tracker_test_{os.getpid()}_{secrets.token_hex(4)}")
    asyncio.run(_migrate(url))
    yield url
    drop_mariadb_database(url)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrating each time is slower)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    asyncio.run(_migrate(f"sqlite+aiosqlite:///{path}"))
    return path


async def _truncate(url: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            if url.startswith("mysql"):
                # One table at a time (TRUNCATE resets AUTO_INCREMENT), foreign keys unchecked.
                await conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 0")
                for t in ALL_TABLES:
                    await conn.exec_driver_sql(f"TRUNCATE {t.name}")
                await conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 1")
            else:
                names = ", ".join(t.name for t in ALL_TABLES)
                await conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
            # The projector's row stays (migration 0007 made it), back at the start.
            await conn.exec_driver_sql("UPDATE cursors SET position = 0, updated_at = NULL")
    finally:
        await engine.dispose()


@pytest.fixture(params=DATABASES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database: a fresh SQLite file, or the run's PostgreSQL or MariaDB
    database, emptied."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "plivo-tracker.db"
        target.write_bytes(template.read_bytes())
        return f"sqlite+aiosqlite:///{target}"
    url: str = request.getfixturevalue("pg_url" if request.param == "postgresql" else "mariadb_url")
    asyncio.run(_truncate(url))
    return url


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def _make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": f"sqlite+aiosqlite:///{tmp_path / 'default.db'}",
            "public_base_url": BASE_URL,
            "plivo_auth_id": AUTH_ID,
            "plivo_auth_token": TOKEN,
            "plivo_main_auth_token": MAIN_TOKEN,
            "plivo_auth_tokens_previous": OLD_TOKEN,
            "spool_dir": str(tmp_path / "spool"),
            "log_format": "json",
            "api_keys": API_KEY,
            "allowed_hosts": TEST_HOSTS,
            # Tests poll the API as fast as they like; the limits have their own tests.
            "rate_limit_api": "100000/minute",
        }
        values.update(overrides)
        # None means "unset": the setting's own default (a list setting cannot be None).
        return load_settings(**{k: v for k, v in values.items() if v is not None})

    return _make


@pytest.fixture
def settings(make_settings: Callable[..., Settings], db_url: str) -> Settings:
    return make_settings(database_url=db_url)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(db_url)
    yield eng
    await eng.dispose()


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[CallbackEndpoint]:
    application = create_app(settings, migrate=False, dispatch=False)
    async with LifespanManager(application):
        yield application


async def set_poison(engine: AsyncEngine, table: str, column: str, value: str, on: bool) -> None:
    """A real database fault: with `on`, inserting a row of `table` whose `column` is `value`
    raises (a BEFORE INSERT trigger, in each database's own dialect); `on=False` removes it."""
    async with engine.begin() as conn:
        name = conn.dialect.name
        if not on:
            suffix = f" ON {table}" if name == "postgresql" else ""
            await conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS poison{suffix}")
        elif name == "postgresql":
            await conn.exec_driver_sql(
                "CREATE OR REPLACE FUNCTION poison() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.{column} = '{value}' THEN RAISE EXCEPTION 'poison'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            await conn.exec_driver_sql(
                f"CREATE TRIGGER poison BEFORE INSERT ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION poison()"
            )
        elif name == "mysql":
            await conn.exec_driver_sql(
                f"CREATE TRIGGER poison BEFORE INSERT ON {table} FOR EACH ROW "
                f"BEGIN IF NEW.{column} = '{value}' THEN "
                "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'poison'; END IF; END"
            )
        else:
            await conn.exec_driver_sql(
                f"CREATE TRIGGER poison BEFORE INSERT ON {table} "
                f"WHEN NEW.{column} = '{value}' BEGIN SELECT RAISE(ABORT, 'poison'); END"
            )


def count_as_projected(conn: Connection, ids: Sequence[int]) -> None:
    """Count messages a test wrote straight into the database in the statistics, as the
    projector counts the messages it applies (messages/rollups.py)."""
    deltas = Deltas()
    for row in conn.execute(select(messages).where(messages.c.id.in_(list(ids)))).mappings():
        deltas.add(row)
    deltas.flush(conn)


async def project_all(engine: AsyncEngine) -> None:
    """Apply everything journaled (what a server's projector does after each append), for tests
    that drive the dispatcher, the committer or the repositories without a server."""
    writer = make_writer(engine)
    try:
        while (await writer.run(lambda conn: project_pending(conn, datetime.now(UTC)))).applied:
            pass
    finally:
        await writer.close()


async def get_message(engine: AsyncEngine, ref: str) -> Message | None:
    """`service.get_message` after applying the journal: the status a server would show."""
    await project_all(engine)
    return await read_message(engine, ref)


async def until_projected(app: Any) -> None:
    """Wait until the app's projector has applied everything journaled so far: a callback's
    200 means "journaled", and the status follows a few milliseconds later (docs/adr/0011)."""
    await app.state.ctx.projector.settled()


def projecting_client(app: Any, **kwargs: Any) -> httpx.AsyncClient:
    """An in-process client whose callback posts return once their report is applied, so a
    test can read the message next (every other request is left alone)."""

    async def after(response: httpx.Response) -> None:
        if response.request.url.path.startswith("/plivo/") and response.status_code == 200:
            await until_projected(app)

    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        event_hooks={"response": [after]},
        **kwargs,
    )


@pytest.fixture
async def client(app: CallbackEndpoint) -> AsyncIterator[httpx.AsyncClient]:
    async with projecting_client(app, headers=AUTH) as c:
        yield c


ServiceOpener = Callable[..., contextlib.AbstractAsyncContextManager[tuple[httpx.AsyncClient, Any]]]


@pytest.fixture
def simulator_service(make_settings: Callable[..., Settings], db_url: str) -> ServiceOpener:
    """Opens the whole app in simulator mode on `db_url` (no credentials, dispatcher and loops
    in process, the simulator's callbacks delivered to the app itself):
    `async with simulator_service(scenario, **settings) as (client, app)`."""

    @contextlib.asynccontextmanager
    async def _open(
        scenario: ScenarioConfig, **overrides: Any
    ) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
        values: dict[str, Any] = {
            "database_url": db_url,
            "plivo_auth_id": None,
            "plivo_auth_token": None,
            "plivo_mps": 1000,
            **overrides,
        }
        app = create_app(
            make_settings(**values), migrate=False, loopback_callbacks=True, scenario=scenario
        )
        async with LifespanManager(app), projecting_client(app, headers=AUTH) as c:
            yield c, app

    return _open


def new_nonce() -> str:
    return "".join(secrets.choice("0123456789") for _ in range(20))


def new_uuid() -> str:
    import uuid

    return str(uuid.uuid4())


def callback_fields(uuid: str, status: str, **extra: str) -> dict[str, str]:
    """A realistic status callback body (plivo-protocol.md §2.2)."""
    fields = {
        "MessageUUID": uuid,
        "Status": status,
        "To": "14155550101",
        "From": "14155550100",
        "Type": "sms",
        "Units": "1",
        "TotalRate": "0.00500",
        "TotalAmount": "0.00500",
        "MCC": "310",
        "MNC": "004",
        "ParentMessageUUID": uuid,
        "PartInfo": "",
        "PowerpackUUID": "",
        "ErrorCode": "",
    }
    fields.update(extra)
    return fields


def callback_item(
    fields: dict[str, str], nonce: str | None = None, *, nonces: tuple[str, ...] | None = None
) -> CallbackItem:
    """A verified form callback as the endpoint hands it to the group committer: signed with
    `nonce` (a fresh one by default), or with every nonce of `nonces` (none: unsigned)."""
    if nonces is None:
        nonces = (nonce or new_nonce(),)
    return make_item(
        received_at=datetime.now(UTC),
        method="POST",
        path="/plivo/callback",
        query="",
        headers={},
        body=urlencode(fields).encode(),
        fields={k: [v] for k, v in fields.items()},
        nonce=nonces[-1] if nonces else None,
        scheme="v3" if nonces else None,
        nonces=nonces,
    )


def signed_form(
    fields: dict[str, str],
    *,
    path: str = "/plivo/callback",
    query: str = "",
    token: str = TOKEN,
    nonce: str | None = None,
    base_url: str = BASE_URL,
) -> tuple[str, bytes, dict[str, str]]:
    """(path+query, body, headers) of a POST callback signed the way Plivo signs it."""
    nonce = nonce or new_nonce()
    url = base_url + path + ("?" + query if query else "")
    form = {k: [v] for k, v in fields.items()}
    headers = signed_headers("POST", url, form, token, nonce)
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    target = path + ("?" + query if query else "")
    return target, urlencode(fields).encode(), headers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


ServeASGI = Callable[[Any], Awaitable[str]]


@pytest.fixture
async def serve_asgi() -> AsyncIterator[ServeASGI]:
    """Serves ASGI apps over real HTTP on loopback ports until the test ends:
    `base_url = await serve_asgi(app)`."""
    running: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def _serve(asgi: Any) -> str:
        port = free_port()
        config = uvicorn.Config(
            asgi, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        running.append((server, task))
        for _ in range(500):  # up to 10 s
            if server.started:
                return f"http://127.0.0.1:{port}"
            await asyncio.sleep(0.02)
        pytest.fail("ASGI server did not start")

    yield _serve
    for server, _ in running:
        server.should_exit = True
    await asyncio.gather(*(task for _, task in running))


PlivoOpener = Callable[..., Awaitable[PlivoClient]]


@pytest.fixture
def plivo_over_http(serve_asgi: ServeASGI) -> PlivoOpener:
    """`await plivo_over_http(sim, token=..., app=..., **client_options)`: a PlivoClient that
    reaches `sim` over real HTTP (its app served on a loopback port; `app` replaces it, e.g. a
    wrapper around it). The caller closes the client."""

    async def _open(
        sim: SimulatedPlivo, token: str = TOKEN, app: Any = None, **options: Any
    ) -> PlivoClient:
        base = await serve_asgi(app if app is not None else create_simulator_app(sim))
        return PlivoClient(base, AUTH_ID, token, **options)

    return _open


@pytest.fixture
async def live_simulator(serve_asgi: ServeASGI) -> tuple[str, SimulatedPlivo]:
    sim = SimulatedPlivo(AUTH_ID, TOKEN)
    return await serve_asgi(create_simulator_app(sim)), sim
