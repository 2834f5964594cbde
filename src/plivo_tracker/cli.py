"""The `plivo-tracker` command: serve, db upgrade, status, spool replay."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.table import Table

from plivo_tracker.config import ConfigError, Settings, load_settings

app = typer.Typer(
    help="Send SMS/MMS through Plivo and track every message's delivery status.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
spool_app = typer.Typer(help="The local spool of callbacks kept while the database was down.")
app.add_typer(db_app, name="db")
app.add_typer(spool_app, name="spool")

out = Console()
err = Console(stderr=True, soft_wrap=True)  # one error = one line, whatever the width


def _fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        _fail(str(exc))


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (PORT).")] = None,
) -> None:
    """Run the HTTP service (callbacks, API, ops endpoints). Migrates SQLite by itself."""
    settings = _settings(host=host, port=port)
    if not settings.binds_loopback and not settings.api_keys:
        _fail(f"HOST: refusing to listen on {settings.host} without API_KEYS (set API_KEYS)")

    import uvicorn

    from plivo_tracker.app import create_app
    from plivo_tracker.logging import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:  # pragma: no cover - uvloop is not built for every platform
        loop = "asyncio"
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop=loop,
        http="auto",  # httptools when installed
        access_log=False,  # structured logs come from the app; an access line per callback costs
        log_level=settings.log_level,
        server_header=False,
        timeout_graceful_shutdown=30,
        proxy_headers=False,  # the signed URL comes from PUBLIC_BASE_URL, never from headers
    )


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply migrations to DATABASE_URL (PostgreSQL needs this before `serve`)."""
    settings = _settings()

    from plivo_tracker.db.engine import make_engine
    from plivo_tracker.db.migrate import current_revision, upgrade

    async def _run() -> str | None:
        engine = make_engine(settings.database_url)
        try:
            await upgrade(engine)
            return await current_revision(engine)
        finally:
            await engine.dispose()

    try:
        revision = asyncio.run(_run())
    except OSError as exc:
        _fail(f"DATABASE_URL: cannot reach the database ({exc})", 1)
    out.print(f"database at revision [bold]{revision}[/]")


def _server_url(settings: Settings, server: str | None) -> str:
    if server:
        return server.rstrip("/")
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    return f"http://{host}:{settings.port}"


def _client_headers(settings: Settings, api_key: str | None) -> dict[str, str]:
    key = api_key or (settings.api_keys[0] if settings.api_keys else None)
    return {"X-API-Key": key} if key else {}


@app.command()
def status(
    ref: Annotated[str, typer.Argument(help="Local id or Plivo MessageUUID.")],
    server: Annotated[str | None, typer.Option(help="Server URL (default from HOST/PORT).")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="PLIVO_TRACKER_API_KEY")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON.")] = False,
) -> None:
    """Show a message's status, error meaning, parts and event timeline (asks a running server)."""
    settings = _settings()
    url = f"{_server_url(settings, server)}/api/messages/{ref}"
    try:
        resp = httpx.get(url, headers=_client_headers(settings, api_key), timeout=10)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the server at {url}: {exc}", 1)
    if resp.status_code != 200:
        try:
            message = resp.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = resp.text[:200]
        _fail(f"{resp.status_code}: {message}", 1)
    data = resp.json()
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    _print_message(data)


_COLOURS = {
    "delivered": "green",
    "sent": "cyan",
    "queued": "blue",
    "accepted": "blue",
    "undelivered": "red",
    "failed": "red",
    "rejected": "red",
}


def _print_message(data: dict[str, Any]) -> None:
    colour = _COLOURS.get(data["status"], "white")
    out.print(
        f"message [bold]{data['id']}[/]  uuid {data['message_uuid'] or '-'}  "
        f"[bold {colour}]{data['status']}[/]"
        + ("  [yellow](conflicting terminal callbacks)[/]" if data["has_conflict"] else "")
    )
    out.print(f"to {data['to'] or '-'}  from {data['from'] or '-'}  type {data['type'] or '-'}")
    if data["error_code"]:
        out.print(f"error {data['error_code']}: {data['error_meaning']} ({data['error_class']})")
    if data["parts"]:
        parts = Table("part", "uuid", "status", "error", title="parts")
        for p in data["parts"]:
            parts.add_row(p["part_info"] or "-", p["part_uuid"], p["status"], p["error_code"] or "")
        out.print(parts)
    timeline = Table("event", "received", "status", "seq", "effect", "error", title="timeline")
    for e in data["events"]:
        timeline.add_row(
            str(e["id"]),
            e["received_at"],
            e["status"],
            "" if e["sequence"] is None else str(e["sequence"]),
            e["effect"],
            e["error_code"] or "",
        )
    out.print(timeline)


@spool_app.command("replay")
def spool_replay() -> None:
    """Commit spooled callbacks now (the server also does this by itself every few seconds)."""
    settings = _settings()

    from plivo_tracker.db.engine import make_engine
    from plivo_tracker.inbound.committer import GroupCommitter
    from plivo_tracker.inbound.spool import Spool

    async def _run() -> int:
        engine = make_engine(settings.database_url)
        committer = GroupCommitter(engine)
        try:
            return await committer.replay(Spool(settings.spool_dir))
        finally:
            await committer.stop()
            await engine.dispose()

    out.print(f"replayed {asyncio.run(_run())} callbacks")


def main() -> None:
    app()
