"""The `plivo-tracker` command: serve, worker, send, status, tail, simulate, db, spool, dispatch,
optout, resolve, sweep, purge."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
from typing import Annotated, Any, NoReturn

import httpx
import structlog
import typer
from rich.console import Console
from rich.markup import escape
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
dispatch_app = typer.Typer(
    help="Pause, resume or inspect sending, for every worker (works on DATABASE_URL directly).",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")
app.add_typer(spool_app, name="spool")
optout_app = typer.Typer(
    help="The opt-out list (STOP): list, add, remove, import (works on DATABASE_URL directly).",
    no_args_is_help=True,
)
app.add_typer(dispatch_app, name="dispatch")
app.add_typer(optout_app, name="optout")

out = Console()
err = Console(stderr=True, soft_wrap=True)  # one error = one line, whatever the width


def _fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _settings(*, serving: bool = False, **overrides: Any) -> Settings:
    try:
        return load_settings(
            serving=serving, **{k: v for k, v in overrides.items() if v is not None}
        )
    except ConfigError as exc:
        _fail(str(exc))


WS_MAX_FRAME = 4096


def server_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn options of `serve` (the benchmarks' servers use them too)."""
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:  # pragma: no cover - uvloop is not built for every platform
        loop = "asyncio"
    return {
        "loop": loop,
        "http": "auto",  # httptools when installed
        "server_header": False,
        "timeout_graceful_shutdown": 30,
        # Frames are ~200 bytes: compressing each one per client cost more CPU than it saved
        # (bench/live.py).
        "ws_per_message_deflate": False,
        # Limits set on purpose (docs/security.md): connections at once (HTTP and WebSocket;
        # beyond it new ones get 503), idle keep-alive, the size of a request's head, and the
        # largest WebSocket frame read (clients only ever send a ~60-byte auth frame).
        "limit_concurrency": settings.max_connections,
        "backlog": 2048,
        "timeout_keep_alive": settings.keepalive_seconds,
        "h11_max_incomplete_event_size": 16 * 1024,
        "ws_max_size": WS_MAX_FRAME,
        # X-Forwarded-For/-Proto only from the proxy (FORWARDED_ALLOW_IPS): the client address
        # feeds the per-address rate limits. The signed callback URL never comes from headers
        # (it is PUBLIC_BASE_URL).
        "proxy_headers": True,
        "forwarded_allow_ips": settings.forwarded_allow_ips,
    }


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (PORT).")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Processes serving the port (WORKERS; default one per CPU core on PostgreSQL, "
            "1 on SQLite; 1 is fine for a small install). One at a time runs the dispatcher."
        ),
    ] = None,
    demo: Annotated[
        bool,
        typer.Option(help="Simulator mode only: send a demo message every ~3 s (dashboard)."),
    ] = False,
) -> None:
    """Run the HTTP service (callbacks, API, dashboard, ops endpoints). Migrates SQLite itself."""
    settings = _settings(
        serving=True,
        host=host,
        port=port,
        workers=workers,
        demo_interval_seconds=3.0 if demo else None,
    )
    if demo and not settings.simulator_mode:
        _fail("--demo sends messages: it runs only in simulator mode (no PLIVO_AUTH_ID/TOKEN)")

    import uvicorn

    from plivo_tracker.app import SUPERVISOR_ENV, create_app, startup_problem
    from plivo_tracker.logging import configure_logging, uvicorn_log_config

    # Every configuration error is one line and exit 2 here, before any worker starts.
    problem = startup_problem(settings)
    if problem:
        _fail(problem)
    configure_logging(settings.log_format, settings.log_level)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        # uvicorn's own lines (access and errors) through structlog, with the request id.
        "log_config": uvicorn_log_config(settings.log_format),
        "access_log": settings.access_log,  # ACCESS_LOG=false: a line per callback costs CPU
        "log_level": settings.log_level,
        **server_options(settings),
    }
    workers = settings.serve_workers
    if workers == 1:
        try:
            app = create_app(settings)  # refuses to run without API_KEYS where they are required
        except ConfigError as exc:
            _fail(str(exc))
        uvicorn.run(app, **options)
        return
    if settings.is_sqlite:
        # Once, here: workers migrating a new file at once would collide.
        from plivo_tracker.composition import upgrade_sqlite_database

        try:
            upgrade_sqlite_database(settings)
        except Exception as exc:  # noqa: BLE001 - one line, before any worker starts
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            _fail(f"DATABASE_URL: cannot migrate the SQLite database ({first})", 1)
    # Each worker builds its app from the environment (app_from_env): give it what this
    # process decided, so that every worker runs with the same settings.
    os.environ.update(_worker_environment(settings))
    os.environ[SUPERVISOR_ENV] = str(os.getpid())
    # /metrics of any worker reports all of them (metrics.py): their files go here.
    from plivo_tracker.metrics import MULTIPROC_DIR, prepare_worker_metrics

    metrics_dir = os.environ.get(MULTIPROC_DIR)
    made = None
    try:
        if metrics_dir:
            prepare_worker_metrics(metrics_dir)
        else:
            metrics_dir = made = tempfile.mkdtemp(prefix="plivo-tracker-metrics-")
    except OSError as exc:
        _fail(f"{MULTIPROC_DIR}: cannot prepare a directory for the workers' metrics ({exc})")
    os.environ[MULTIPROC_DIR] = metrics_dir
    limits = (
        settings.rate_limit_api,
        settings.rate_limit_ws_connect,
        settings.rate_limit_auth_failures,
        settings.rate_limit_callback_failures,
    )
    if settings.rate_limit_storage.startswith("memory://") and set(limits) != {"off"}:
        structlog.get_logger("plivo_tracker.cli").warning(
            "serve.rate_limits_per_worker",
            workers=workers,
            detail="RATE_LIMIT_STORAGE=memory:// counts in each worker: the limits allow "
            "WORKERS times as much; share them with redis://",
        )
    try:
        uvicorn.run("plivo_tracker.app:app_from_env", factory=True, workers=workers, **options)
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)


def _worker_environment(settings: Settings) -> dict[str, str]:
    """The settings `serve` took from its options or made up, as environment variables for
    its workers: the listen address, the demo, and simulator mode's token (random unless set;
    every worker must verify the callbacks that any worker's simulator signs)."""
    env = {
        "HOST": settings.host,
        "PORT": str(settings.port),
        "DEMO_INTERVAL_SECONDS": str(settings.demo_interval_seconds),
    }
    if settings.simulator_mode:
        env["SIMULATOR_AUTH_TOKEN"] = settings.simulator_auth_token
    return env


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply migrations to DATABASE_URL (PostgreSQL and MariaDB need this before `serve`)."""
    settings = _settings()

    from plivo_tracker.composition import upgrade_database
    from plivo_tracker.db.migrate import UnsupportedDatabase

    try:
        revision = asyncio.run(upgrade_database(settings))
    except OSError as exc:
        _fail(f"DATABASE_URL: cannot reach the database ({exc})", 1)
    except UnsupportedDatabase as exc:
        _fail(f"DATABASE_URL: {exc}", 2)
    out.print(f"database at revision [bold]{revision}[/]")


class _Bars:
    """`db copy`'s progress: a Rich bar per table (nothing drawn when not a terminal)."""

    def __init__(self, progress: Any) -> None:
        self._progress = progress
        self._tasks: dict[str, Any] = {}

    def table(self, name: str, total: int, done: int) -> None:
        self._tasks[name] = self._progress.add_task(name, total=max(total, 1), completed=done)
        if total == 0:
            self._progress.update(self._tasks[name], completed=1)

    def advance(self, name: str, rows: int) -> None:
        self._progress.advance(self._tasks[name], rows)


@db_app.command("copy")
def db_copy(
    source: Annotated[
        str | None,
        typer.Option("--from", metavar="URL", help="The database to copy (default DATABASE_URL)."),
    ] = None,
    target: Annotated[
        str, typer.Option("--to", metavar="URL", help="The database to copy into.")
    ] = "",
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted copy into --to.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="--to holds data: delete all of it first, then copy."),
    ] = False,
    batch_size: Annotated[
        int, typer.Option(help="Rows per transaction on the target.", min=1)
    ] = 5000,
) -> None:
    """Copy every table (messages, events, journal, outbox, opt-outs, rollups, cursors...) from
    one database to another, e.g. SQLite to PostgreSQL; then compare row counts and a checksum
    of every table. Stop `serve` and `worker` first (docs/deploy.md). The source is only read;
    a target without a schema gets one; a target holding data is refused unless --resume or
    --force. Exit 1 when a table differs after the copy."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as RichProgress

    from plivo_tracker.composition import copy_between
    from plivo_tracker.config import normal_database_url
    from plivo_tracker.db.copy import CopyFailed, CopyRefused

    if not target:
        _fail("--to: give the database to copy into (e.g. postgresql://HOST/DB)")
    urls = []
    # --from defaults to the database itself, never through PgBouncer (DATABASE_DIRECT_URL).
    default = None if source else _settings().direct_database_url
    for option, url in (("--from", source or default or ""), ("--to", target)):
        try:
            urls.append(normal_database_url(url))
        except ValueError as exc:
            _fail(f"{option}: {exc}")
    bars = RichProgress(
        TextColumn("{task.description:<18}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not err.is_terminal,
    )
    try:
        with bars:
            result = asyncio.run(
                copy_between(
                    urls[0],
                    urls[1],
                    batch_size=batch_size,
                    resume=resume,
                    force=force,
                    progress=_Bars(bars),
                )
            )
    except CopyRefused as exc:
        _fail(str(exc))
    except CopyFailed as exc:
        _fail(str(exc), 1)
    except KeyboardInterrupt:
        _fail("interrupted: what was committed stays; run again with --resume to continue", 130)
    table = Table("table", "source rows", "target rows", "checksum (SHA-256)", "", show_edge=False)
    for check in result.checks:
        same = check.source_sum == check.target_sum
        digest = (
            check.source_sum[:16] if same else f"{check.source_sum[:16]} ≠ {check.target_sum[:16]}"
        )
        table.add_row(
            check.name,
            f"{check.source_rows:,}",
            f"{check.target_rows:,}",
            digest,
            "[green]✓[/]" if check.ok else "[bold red]✗[/]",
        )
    out.print(table)
    copied = sum(result.copied.values())
    kept = sum(result.resumed_from.values())
    out.print(
        f"{'schema created; ' if result.created_schema else ''}copied {copied:,} rows in "
        f"{result.copy_seconds:.1f} s"
        + (f" (resumed: {kept:,} were already there)" if kept else "")
        + f"; verified in {result.verify_seconds:.1f} s",
        highlight=False,
    )
    if not result.ok:
        bad = ", ".join(c.name for c in result.checks if not c.ok)
        _fail(f"the copy differs from the source in: {bad}", 1)
    out.print("[green]every table matches[/]")


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


@app.command()
def send(
    to: Annotated[list[str], typer.Option("--to", help="Recipient in E.164; repeat for more.")],
    text: Annotated[str | None, typer.Option(help="Message text.")] = None,
    type_: Annotated[str, typer.Option("--type", help="sms or mms.")] = "sms",
    media_url: Annotated[list[str] | None, typer.Option(help="MMS media URL; repeat.")] = None,
    sender: Annotated[
        str | None, typer.Option("--from", help="Sender (default PLIVO_SRC).")
    ] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Idempotency-Key header.")] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Follow until every message is settled (final, or sent without a receipt); "
            "exit 3 unless each was delivered or sent without a receipt.",
        ),
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most.")] = 120.0,
    message_expiry: Annotated[
        int | None, typer.Option(help="Seconds it may wait in Plivo's queue (5-10799).")
    ] = None,
    log: Annotated[
        str | None,
        typer.Option(help="What Plivo keeps: true, false, number_only, content_only."),
    ] = None,
    trackable: Annotated[
        bool | None, typer.Option("--trackable/--no-trackable", help="Link-click tracking.")
    ] = None,
    media_id: Annotated[
        list[str] | None, typer.Option(help="MMS media already uploaded to Plivo; repeat.")
    ] = None,
    dlt_entity_id: Annotated[str | None, typer.Option(help="India DLT entity id.")] = None,
    dlt_template_id: Annotated[str | None, typer.Option(help="India DLT template id.")] = None,
    dlt_template_category: Annotated[
        str | None, typer.Option(help="India DLT template category.")
    ] = None,
    transactional: Annotated[
        bool,
        typer.Option(
            "--transactional",
            help="A transactional message that may reach opted-out recipients, when the "
            "server's operator enabled OPT_OUT_TRANSACTIONAL_EXEMPTION (refused otherwise).",
        ),
    ] = False,
    server: Annotated[str | None, typer.Option(help="Server URL (default from HOST/PORT).")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="PLIVO_TRACKER_API_KEY")] = None,
) -> None:
    """Send through a running server; prints the local ids (and follows them with --wait)."""
    settings = _settings()
    base = _server_url(settings, server)
    headers = _client_headers(settings, api_key)
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    body: dict[str, Any] = {"to": to, "type": type_}
    if text is not None:
        body["text"] = text
    if media_url:
        body["media_urls"] = media_url
    if sender:
        body["from"] = sender
    if transactional:
        body["transactional"] = True
    options = {
        "message_expiry": message_expiry,
        "log": log,
        "trackable": trackable,
        "media_ids": media_id or None,
        "dlt_entity_id": dlt_entity_id,
        "dlt_template_id": dlt_template_id,
        "dlt_template_category": dlt_template_category,
    }
    body.update({k: v for k, v in options.items() if v is not None})
    try:
        resp = httpx.post(f"{base}/api/messages", json=body, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the server at {base}: {exc}", 1)
    if resp.status_code != 202:
        try:
            error = resp.json()["error"]
        except (ValueError, KeyError, TypeError):
            _fail(f"{resp.status_code}: {resp.text[:200]}", 1)
        details = "; ".join(
            f"{_where(p)}: {p.get('message', '')}" for p in error.get("problems", [])
        )
        _fail(f"{resp.status_code}: {details or error['message']}", 1)
    created = resp.json()["messages"]
    if not wait:
        for m in created:
            out.print(f"{m['id']}\t{m['to']}\t{m['status']}", highlight=False)
        return
    _follow(base, headers, [m["id"] for m in created], timeout)


_FINAL = {"delivered", "undelivered", "failed", "rejected", "read"}


def _where(problem: dict[str, Any]) -> str:
    """What a 422 problem is about: the bad value, the field, or the location."""
    if problem.get("value") is not None:
        return str(problem["value"])
    if problem.get("field"):
        return str(problem["field"])
    loc = [str(p) for p in problem.get("loc", []) if p != "body"]
    return ".".join(loc) or "request"


def _follow(base: str, headers: dict[str, str], ids: list[int], timeout: float) -> None:
    import time

    from rich.live import Live

    def table(rows: list[dict[str, Any]]) -> Table:
        t = Table("id", "to", "status", "error", "message uuid")
        for r in rows:
            colour = _COLOURS.get(r["status"], "white")
            error = f"{r['error_code']} {r['error_meaning']}" if r.get("error_code") else ""
            to = r["to"] or ""
            masked = to[:4] + "*" * max(0, len(to) - 6) + to[-2:] if len(to) > 6 else to
            status = r["status"] + (
                ", no receipt" if r.get("settled_reason") == "no_receipt" else ""
            )
            t.add_row(
                str(r["id"]), masked, f"[{colour}]{status}[/]", error, r["message_uuid"] or ""
            )
        return t

    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    with (
        httpx.Client(base_url=base, headers=headers, timeout=10) as client,
        Live(table(rows), console=out, refresh_per_second=8) as live,
    ):
        while True:
            rows = [client.get(f"/api/messages/{i}").json() for i in ids]
            live.update(table(rows))
            if all(_settled(r) for r in rows):
                break
            if time.monotonic() > deadline:
                unknown = [str(r["id"]) for r in rows if r["status"] == "unknown"]
                hint = (
                    f" ({', '.join(unknown)} unknown: plivo-tracker resolve ID --adopt UUID"
                    " | --resend)"
                    if unknown
                    else ""
                )
                _fail(f"not settled after {timeout:.0f} s{hint}", 1)
            time.sleep(0.25)
    # Plivo's advice where carriers send no receipts: count "sent, no receipt" as delivered.
    if any(r["status"] != "delivered" and r.get("settled_reason") != "no_receipt" for r in rows):
        raise typer.Exit(3)


def _settled(row: dict[str, Any]) -> bool:
    return bool(row.get("settled")) or row["status"] in _FINAL


def _ws_url(base: str) -> str:
    return "ws" + base[len("http") :] if base.startswith("http") else base


def _frame_line(frame: dict[str, Any]) -> str:
    colour = _COLOURS.get(frame["status"], "white")
    before = frame["previous_status"] or "-"
    error = f"  error {frame['error_code']}" if frame.get("error_code") else ""
    return (
        f"[dim]#{frame['id']}[/]  {frame['at']}  message [bold]{frame['message_id']}[/]  "
        f"{frame['message_uuid'] or '-'}  {before} → [bold {colour}]{frame['status']}[/]{error}"
    )


def _message_line(frame: dict[str, Any]) -> str:
    """An inbound message's frame: who wrote to which of our numbers, and what."""
    media = frame.get("media_urls") or []
    extra = f"  [dim]+{len(media)} media[/]" if media else ""
    text = escape(frame.get("text") or "")
    return (
        f"[dim]#{frame['id']}[/]  {frame['at']}  message [bold]{frame['message_id']}[/]  "
        f"{frame['message_uuid'] or '-'}  [bold cyan]inbound[/] {escape(frame['from'] or '-')} "
        f"→ {escape(frame['to'] or '-')}: {text}{extra}"
    )


@app.command()
def tail(
    since: Annotated[
        int | None, typer.Option(help="Replay every change after this event id first.")
    ] = None,
    status_filter: Annotated[
        str | None, typer.Option("--status", help="Only these statuses (comma-separated).")
    ] = None,
    message: Annotated[
        str | None, typer.Option(help="Only this message (local id or MessageUUID).")
    ] = None,
    count: Annotated[int | None, typer.Option(help="Exit after this many changes.", min=1)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON frame per line.")] = False,
    server: Annotated[str | None, typer.Option(help="Server URL (default from HOST/PORT).")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="PLIVO_TRACKER_API_KEY")] = None,
) -> None:
    """Follow every committed status change and inbound message (WS /ws); reconnects and
    resumes by itself."""
    import time

    from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
    from websockets.sync.client import connect

    settings = _settings()
    base = _ws_url(_server_url(settings, server))
    headers = _client_headers(settings, api_key)
    cursor, seen, backoff = since, 0, 0.5
    while True:
        params = {"since": cursor, "status": status_filter, "message_id": message}
        query = "&".join(f"{k}={v}" for k, v in params.items() if v is not None)
        url = f"{base}/ws" + (f"?{query}" if query else "")
        try:
            with connect(url, additional_headers=headers, open_timeout=10) as ws:
                for raw in ws:
                    frame = json.loads(raw)
                    if frame["type"] == "error" and frame["code"] == "too_slow":
                        break  # dropped for lagging: resume from the cursor at once
                    if frame["type"] == "error":
                        _fail(f"{frame['code']}: {frame['message']}", 1)
                    if frame["type"] == "ready":
                        backoff = 0.5
                        if cursor is None:
                            cursor = frame["last_id"]
                    if frame["type"] not in ("status", "message"):
                        continue
                    cursor = frame["id"]
                    if as_json:
                        sys.stdout.write(json.dumps(frame) + "\n")
                        sys.stdout.flush()
                    else:
                        line = (_message_line if frame["type"] == "message" else _frame_line)(frame)
                        out.print(line, highlight=False, soft_wrap=True)
                    seen += 1
                    if count is not None and seen >= count:
                        return
        except KeyboardInterrupt:
            return
        except (OSError, ConnectionClosed, InvalidStatus, WebSocketException, TimeoutError) as exc:
            err.print(f"[yellow]reconnecting[/] after {exc.__class__.__name__} (from #{cursor})")
        time.sleep(backoff)
        backoff = min(backoff * 2, 10.0)


@app.command()
def worker() -> None:
    """Run only the outbox dispatcher, the sweeper and the purge (scale-out: many workers on
    PostgreSQL)."""
    settings = _settings(serving=True)

    from plivo_tracker.composition import run_worker
    from plivo_tracker.logging import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    asyncio.run(run_worker(settings))


@app.command()
def simulate(
    host: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Listen port.")] = 8010,
    speed: Annotated[
        float, typer.Option(help="Divides every delay (10 = ten times faster).")
    ] = 1.0,
    fail_rate: Annotated[float, typer.Option(help="Share of messages failed.")] = 0.03,
    undelivered_rate: Annotated[float, typer.Option(help="Share undelivered.")] = 0.05,
    dup_rate: Annotated[float, typer.Option(help="Share of callbacks sent twice.")] = 0.02,
    reorder_rate: Annotated[float, typer.Option(help="Share of DLRs that beat `sent`.")] = 0.02,
    callback_drop_rate: Annotated[
        float,
        typer.Option(
            help="Share of messages whose every callback (retries too) is lost; "
            "Get/List Messages still show their real state."
        ),
    ] = 0.0,
    sent_final_rate: Annotated[
        float, typer.Option(help="Share of messages that end at `sent` (no delivery receipt).")
    ] = 0.0,
    sent_final_prefix: Annotated[
        list[str] | None,
        typer.Option(help="Destinations starting with these digits always end at `sent`; repeat."),
    ] = None,
    per_part_callbacks: Annotated[
        bool,
        typer.Option(
            help="Old multipart behaviour: one UUID and one set of callbacks per part "
            "(ParentMessageUUID, PartInfo 'k of N') instead of one DLR with Units."
        ),
    ] = False,
    signature_mode: Annotated[
        str,
        typer.Option(
            help="Callback signature headers: both (V2+V3), v2, v3, or ma (both plus "
            "Ma-V2/Ma-V3 signed with --main-token)."
        ),
    ] = "both",
    main_token: Annotated[
        str | None,
        typer.Option(help="Main-account token for --signature-mode ma (PLIVO_MAIN_AUTH_TOKEN)."),
    ] = None,
    fail_first: Annotated[
        int, typer.Option(help="Answer the first N sends with an error, creating nothing.")
    ] = 0,
    fail_status: Annotated[
        int, typer.Option(help="Status of the failing sends (500, 502, 503, 429, ...).")
    ] = 500,
    retry_after: Annotated[
        int, typer.Option(help="Retry-After seconds when --fail-status is 429.")
    ] = 1,
    fail_after_create: Annotated[
        int,
        typer.Option(help="The next N sends create the message, then answer --fail-status."),
    ] = 0,
    timeout_after_create: Annotated[
        int,
        typer.Option(
            help="The next N sends create the message, then answer only after --hang-seconds."
        ),
    ] = 0,
    hang_seconds: Annotated[
        float, typer.Option(help="How long --timeout-after-create sends hang.")
    ] = 30.0,
    garbage_after_create: Annotated[
        int,
        typer.Option(help="The next N sends create the message, then answer 202 with HTML."),
    ] = 0,
    latency: Annotated[float, typer.Option(help="Seconds before each send answers.")] = 0.0,
    list_per_minute: Annotated[
        int, typer.Option(help="List Messages requests per rolling minute (0 = unlimited).")
    ] = 20,
    api_per_5s: Annotated[
        int, typer.Option(help="API requests of any kind per rolling 5 s (0 = unlimited).")
    ] = 300,
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible outcomes.")] = None,
    callbacks: Annotated[
        bool, typer.Option(help="Post status callbacks (off: Message API only, for load tests).")
    ] = True,
    message_url: Annotated[
        str | None,
        typer.Option(
            help="The Application's message_url: where inbound messages are posted, signed "
            "(default PUBLIC_BASE_URL/plivo/inbound)."
        ),
    ] = None,
    message_method: Annotated[
        str, typer.Option(help="The Application's message_method: POST or GET.")
    ] = "POST",
    number: Annotated[
        list[str] | None,
        typer.Option(help="The account's numbers (digits) that receive messages; repeat."),
    ] = None,
    inbound_per_minute: Annotated[
        float,
        typer.Option(
            help="Inbound messages per minute from simulated senders (0 = only on demand: "
            "POST /_simulator/inbound {from, to, text, media})."
        ),
    ] = 0.0,
    reply_rate: Annotated[
        float, typer.Option(help="Share of delivered messages whose recipient writes back.")
    ] = 0.0,
) -> None:
    """Run the Plivo simulator standalone (Message API + signed callbacks) for tests and demos.

    It accepts the account PLIVO_AUTH_ID/PLIVO_AUTH_TOKEN (point PLIVO_API_URL at it). The send
    faults apply in order: --fail-first, then (the message exists) --fail-after-create,
    --timeout-after-create, --garbage-after-create. Tests change faults while it runs with
    PUT /_simulator/faults (JSON, e.g. {"unauthorized": true}) and read counters at
    GET /_simulator/stats. Inbound messages (STOP/START/HELP and non-ASCII texts among them)
    go to --message-url at --inbound-per-minute, as replies (--reply-rate), and on demand."""
    settings = _settings()
    if not settings.plivo_auth_id or not settings.plivo_auth_token:
        _fail("PLIVO_AUTH_ID: set PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN for the simulated account")
    import uvicorn

    from plivo_tracker.logging import configure_logging, uvicorn_log_config
    from plivo_tracker.simulator.api import Faults, SimulatedPlivo, create_simulator_app
    from plivo_tracker.simulator.emitter import Emitter
    from plivo_tracker.simulator.inbound import IncomingTraffic
    from plivo_tracker.simulator.scenario import ScenarioConfig

    configure_logging(settings.log_format, settings.log_level)
    try:
        scenario = ScenarioConfig(
            speed=speed,
            fail_rate=fail_rate,
            undelivered_rate=undelivered_rate,
            dup_rate=dup_rate,
            reorder_rate=reorder_rate,
            callback_drop_rate=callback_drop_rate,
            sent_final_rate=sent_final_rate,
            sent_final_prefixes=tuple(sent_final_prefix or ()),
            per_part_callbacks=per_part_callbacks,
            reply_rate=reply_rate,
        )
        faults = Faults(
            fail_first=fail_first,
            fail_status=fail_status,
            retry_after=retry_after,
            latency=latency,
            fail_after_create=fail_after_create,
            timeout_after_create=timeout_after_create,
            hang_seconds=hang_seconds,
            garbage_after_create=garbage_after_create,
            list_per_minute=list_per_minute,
            api_per_5s=api_per_5s,
        )
        emitter = Emitter(
            settings.plivo_auth_token,
            scenario,
            seed=seed,
            signature_mode=signature_mode,
            main_token=main_token or settings.plivo_main_auth_token,
        )
    except ValueError as exc:
        _fail(f"simulate: {exc}")
    numbers = tuple(n.lstrip("+") for n in number or ("14155550100",))
    if message_method.upper() not in ("POST", "GET"):
        _fail("simulate: --message-method must be POST or GET")
    if not all(n.isdigit() for n in numbers):
        _fail("simulate: --number takes digits (country code first)")
    state = SimulatedPlivo(
        settings.plivo_auth_id,
        settings.plivo_auth_token,
        faults,
        emitter=emitter if callbacks else None,
        numbers=numbers,
        message_url=message_url or settings.public_base_url + "/plivo/inbound",
        message_method=message_method.upper(),
    )
    if inbound_per_minute < 0:
        _fail("simulate: --inbound-per-minute must be >= 0")
    if inbound_per_minute > 0:
        state.traffic = IncomingTraffic(state.receive, numbers, inbound_per_minute, seed=seed)
    uvicorn.run(
        create_simulator_app(state),
        host=host,
        port=port,
        log_config=uvicorn_log_config(settings.log_format),
        access_log=False,
        log_level="warning",
    )


@spool_app.command("replay")
def spool_replay() -> None:
    """Commit spooled callbacks now (the server also does this by itself every few seconds)."""
    settings = _settings()

    from plivo_tracker.composition import replay_spool

    out.print(f"replayed {asyncio.run(replay_spool(settings))} callbacks")


def _on_database(settings: Settings, work: Any) -> Any:
    """Run `work(conn)` in one write transaction on DATABASE_URL (operator commands)."""
    from plivo_tracker.composition import on_database

    try:
        return asyncio.run(on_database(settings, work))
    except OSError as exc:
        _fail(f"DATABASE_URL: cannot reach the database ({exc})", 1)


def _print_pause(state: Any) -> None:
    if not state.paused:
        out.print("dispatching: [bold green]running[/]")
        return
    out.print(f"dispatching: [bold red]paused[/] by {state.paused_by} since {state.since}")
    out.print(f"reason: {state.reason}", highlight=False)
    if state.paused_by == "auto":
        out.print(f"next probe of Plivo: {state.next_probe_at} (after {state.probes} failed)")


@dispatch_app.command("status")
def dispatch_status() -> None:
    """Whether sending is paused, by whom, why and since when."""
    from plivo_tracker.outbound.repository import pause_state

    _print_pause(_on_database(_settings(), pause_state))


@dispatch_app.command("pause")
def dispatch_pause(
    reason: Annotated[str, typer.Option(help="Shown in /ready and the dashboard.")] = (
        "paused by an operator"
    ),
) -> None:
    """Stop sending on every worker until `dispatch resume` (messages stay queued)."""
    from datetime import UTC, datetime

    from plivo_tracker.outbound.repository import pause_state, set_paused

    def work(conn: Any) -> Any:
        now = datetime.now(UTC)
        set_paused(conn, by="operator", reason=reason[:300], now=now, next_probe_at=None)
        return pause_state(conn)

    _print_pause(_on_database(_settings(), work))


@dispatch_app.command("resume")
def dispatch_resume() -> None:
    """Resume sending (after an operator's pause, or at once after an automatic one)."""
    from datetime import UTC, datetime

    from plivo_tracker.outbound.repository import pause_state, resume

    def work(conn: Any) -> Any:
        resume(conn, datetime.now(UTC))
        return pause_state(conn)

    _print_pause(_on_database(_settings(), work))


def _optout_number(raw: str) -> str:
    from plivo_tracker.messages import phone

    try:
        return phone.to_e164(raw)
    except phone.InvalidNumber as exc:
        _fail(f"NUMBER: {raw!r} is not a phone number in E.164 ({exc})")


@optout_app.command("list")
def optout_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
) -> None:
    """Every number that opted out, in number order."""
    from plivo_tracker.optouts.repository import page

    def work(conn: Any) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        while True:
            batch = page(conn, rows[-1]["number"] if rows else None, 1000)
            rows.extend(batch)
            if len(batch) < 1000:
                return rows

    rows = _on_database(_settings(), work)
    if as_json:
        for row in rows:
            row["opted_out_at"] = row["opted_out_at"].isoformat()
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
        return
    table = Table("number", "opted out at", "source", "keyword", "message", "note")
    for row in rows:
        table.add_row(
            row["number"],
            row["opted_out_at"].strftime("%Y-%m-%d %H:%M:%S UTC"),
            row["source"],
            row["keyword"] or "",
            "" if row["message_id"] is None else str(row["message_id"]),
            row["note"] or "",
        )
    out.print(table)
    out.print(f"{len(rows)} opted out", highlight=False)


@optout_app.command("add")
def optout_add(
    number: Annotated[str, typer.Argument(help="E.164 number, e.g. +14155550101.")],
    note: Annotated[str | None, typer.Option(help="Why (kept with the opt-out).")] = None,
) -> None:
    """Opt a number out: sends to it are refused (harmless if it already has)."""
    from datetime import UTC, datetime

    from plivo_tracker.optouts.repository import Change, opt_out

    e164 = _optout_number(number)
    change = Change("cli", datetime.now(UTC), note=note[:500] if note else None)
    changed = _on_database(_settings(), lambda conn: opt_out(conn, e164, change))
    out.print(f"{e164}: {'opted out' if changed else 'had already opted out'}", highlight=False)


@optout_app.command("remove")
def optout_remove(
    number: Annotated[str, typer.Argument(help="E.164 number, e.g. +14155550101.")],
) -> None:
    """Opt a number back in (harmless if it had not opted out)."""
    from datetime import UTC, datetime

    from plivo_tracker.optouts.repository import Change, opt_in

    e164 = _optout_number(number)
    change = Change("cli", datetime.now(UTC))
    changed = _on_database(_settings(), lambda conn: opt_in(conn, e164, change))
    out.print(f"{e164}: {'opted back in' if changed else 'had not opted out'}", highlight=False)


MAX_BAD_LINES_SHOWN = 50


@optout_app.command("import")
def optout_import(
    file: Annotated[str, typer.Argument(help="CSV file: a number a row, optional header.")],
) -> None:
    """Opt out every number of a CSV file, in one transaction: any bad row and nothing is
    imported (each bad row is named with its line); numbers already opted out stay as they
    are. Format: docs/operations.md, Opt-outs."""
    from datetime import UTC, datetime

    from plivo_tracker.optouts.csvfile import parse
    from plivo_tracker.optouts.repository import import_rows

    settings = _settings()
    try:
        with open(file, encoding="utf-8", newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"FILE: cannot read {file} ({exc})", 1)
    rows, bad = parse(text)
    if bad:
        for problem in bad[:MAX_BAD_LINES_SHOWN]:
            err.print(f"{file}: {problem}", highlight=False)
        if len(bad) > MAX_BAD_LINES_SHOWN:
            err.print(f"... and {len(bad) - MAX_BAD_LINES_SHOWN} more", highlight=False)
        _fail(f"{len(bad)} bad row(s) in {file}: nothing imported", 1)
    now = datetime.now(UTC)
    added, already = _on_database(settings, lambda conn: import_rows(conn, rows, now))
    out.print(f"imported {added} opt-outs, {already} already opted out", highlight=False)


@app.command()
def doctor() -> None:
    """Check configuration, database, Plivo credentials, sender, callback URL, API keys, spool
    and quarantine: one line each, with what to do. Exit 1 when a check fails."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        out.print(f"[red]✗[/] configuration: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None

    from plivo_tracker.doctor import run_checks

    checks = asyncio.run(run_checks(settings))
    for check in checks:
        mark = "[red]✗[/]" if not check.ok else ("[yellow]![/]" if check.warning else "[green]✓[/]")
        line = f"{mark} {check.name}: {check.detail}"
        if check.fix and (not check.ok or check.warning):
            line += f" [dim]→ {check.fix}[/]"
        out.print(line, highlight=False, soft_wrap=True)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


@app.command()
def sweep(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Look up and print; change nothing.")
    ] = False,
) -> None:
    """Look up stuck messages at Plivo now and apply what it says (the server does it every
    SWEEP_INTERVAL_SECONDS by itself)."""
    settings = _settings()
    if settings.simulator_mode:
        _fail(
            "sweep asks Plivo: set PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN (simulator mode sweeps "
            "inside the running server)"
        )

    from plivo_tracker.composition import sweep_once

    try:
        result = asyncio.run(sweep_once(settings, dry_run=dry_run))
    except OSError as exc:
        _fail(f"DATABASE_URL: cannot reach the database ({exc})", 1)
    for line in result.lines:
        out.print(line, highlight=False)
    verb = "would apply" if dry_run else "applied"
    out.print(
        f"looked up {result.looked_up}, {verb} {result.changed} changes, "
        f"{result.no_receipt} sent without receipt, {result.unknown_at_plivo} unknown at "
        f"Plivo, {result.errors} errors"
    )


@app.command()
def resolve(
    message_id: Annotated[int, typer.Argument(help="Local id of a message in `unknown`.")],
    adopt: Annotated[
        str | None, typer.Option(help="Plivo has it: this MessageUUID (from Plivo's logs).")
    ] = None,
    resend: Annotated[bool, typer.Option(help="Plivo has nothing: send it again.")] = False,
) -> None:
    """Settle a message whose send outcome is unknown (docs/adr/0008): adopt or resend."""
    from datetime import UTC, datetime

    from plivo_tracker.outbound.repository import ResolveError, resolve_adopt, resolve_resend

    if (adopt is None) == (not resend):
        _fail("give exactly one of --adopt UUID and --resend")
    uuid = adopt.strip() if adopt else None

    from plivo_tracker.retention.content import erase_unneeded

    settings = _settings()

    def work(conn: Any) -> None:
        now = datetime.now(UTC)
        if uuid is not None:
            resolve_adopt(conn, message_id, uuid, now)
            erase_unneeded(conn, [message_id], now, settings.erasure)
        else:
            resolve_resend(conn, message_id, now)

    try:
        _on_database(settings, work)
    except ResolveError as exc:
        _fail(str(exc), 1)
    action = f"adopted {uuid}" if uuid else "queued again"
    out.print(f"message {message_id}: {action}")


@app.command()
def purge(
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            metavar="AGE",
            help="Delete what is older than this: 90d, 12h, 30m (default RETENTION_DAYS).",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")
    ] = False,
) -> None:
    """Delete settled messages (with their history), quarantine rows, idempotency keys and
    nonces older than the retention, and statistics older than STATS_RETENTION_DAYS; print the
    rows per table. Never a message still queued, in flight or unknown (docs/operations.md).
    The server does it every PURGE_INTERVAL_SECONDS by itself."""
    from datetime import timedelta

    from plivo_tracker.retention.rules import BadDuration, parse_duration

    settings = _settings()
    try:
        age = parse_duration(older_than) if older_than is not None else None
    except BadDuration as exc:
        _fail(f"--older-than: {exc}")
    age = age or timedelta(days=settings.retention_days)

    from plivo_tracker.composition import purge_once

    try:
        result = asyncio.run(purge_once(settings, older_than=age, dry_run=dry_run))
    except OSError as exc:
        _fail(f"DATABASE_URL: cannot reach the database ({exc})", 1)
    verb = "would delete" if dry_run else "deleted"
    cut = result.cutoffs
    table = Table("table", verb, "older than", title=None, show_edge=False)
    replay = {"idempotency_keys", "callback_nonces"}
    for name, n in result.counts().items():
        before = cut.stats if name.startswith("stats_") else cut.messages
        before = cut.replay_guard if name in replay else before
        table.add_row(name, f"{n:,}", before.strftime("%Y-%m-%d %H:%M UTC"))
    out.print(table)
    out.print(
        f"{'dry run: nothing deleted; ' if dry_run else ''}{result.kept:,} older messages "
        "kept (not settled yet, in a resend chain with one that is not, or the newest)",
        highlight=False,
    )


def main() -> None:
    app()
