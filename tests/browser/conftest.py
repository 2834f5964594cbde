"""The dashboard in Debian's Chromium (driven by Playwright) against real `plivo-tracker serve`
processes in simulator mode, on SQLite and PostgreSQL (the `db_url` fixture).

Playwright is started per test, after the database fixtures: its sync API keeps an event loop
running in this thread, and the shared fixtures use asyncio.run(). No browser is ever downloaded:
`scripts/test` installs Debian's `chromium` when it is missing.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    WebSocket,
    sync_playwright,
)

from plivo_tracker.plivo.signature import signed_headers
from tests.conftest import callback_fields, free_port, new_nonce
from tests.e2e.server import Server, simulator_process

CHROMIUM = os.environ.get("PLIVO_TRACKER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
FINAL = frozenset({"delivered", "undelivered", "failed", "rejected", "read"})
# Shared by every server of a test, so any of them accepts the others' simulated callbacks.
SIMULATOR_TOKEN = "browser-test-simulator-token"
# The number the simulator sends from and receives on (SIMULATOR_SRC, `simulate --number`).
OUR_NUMBER = "+14155550100"


@dataclass
class Dashboard:
    """A server (restartable on the same port and database), a browser and its pages."""

    tmp_path: Path
    database_url: str
    name: str
    browser: Browser
    server: Server
    extra_env: dict[str, str]
    servers: list[Server]
    contexts: list[BrowserContext] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    request_urls: list[str] = field(default_factory=list)
    sockets: list[WebSocket] = field(default_factory=list)
    # (socket url, payload) of every WebSocket frame, in order
    frames_sent: list[tuple[str, str]] = field(default_factory=list)
    frames_received: list[tuple[str, str]] = field(default_factory=list)
    # Closed by the fixture after the browser, before the servers (the `simulate` process).
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    simulator: str | None = None  # base URL of the `simulate` process, once started

    @property
    def base(self) -> str:
        return self.server.base

    def start_server(self, name: str, port: int | None = None) -> Server:
        """Another `serve` process on the same database (on `port`, or a free one)."""
        server = start_server(self.tmp_path, self.database_url, name, port, self.extra_env)
        self.servers.append(server)
        return server

    def new_page(self, **context_args: Any) -> Page:
        """A page in a fresh context; console errors, warnings and page errors are collected."""
        context = self.browser.new_context(**context_args)
        self.contexts.append(context)
        page = context.new_page()

        def on_console(msg: ConsoleMessage) -> None:
            if msg.type in ("error", "warning"):
                self.problems.append(f"console {msg.type}: {msg.text} ({msg.location})")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("request", lambda req: self.request_urls.append(req.url))
        page.on("websocket", self._on_socket)
        return page

    def _on_socket(self, ws: WebSocket) -> None:
        self.sockets.append(ws)
        url = ws.url
        ws.on("framesent", lambda payload: self.frames_sent.append((url, str(payload))))
        ws.on("framereceived", lambda payload: self.frames_received.append((url, str(payload))))

    def open(self, route: str = "#/", page: Page | None = None) -> Page:
        page = page or self.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{self.base}/{route}")
        return page

    def screenshot(self, page: Page, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{self.name}.png"), full_page=True)

    # --- the HTTP API, as another client would use it ------------------------------------------

    def api(self, method: str, path: str, base: str | None = None, **kwargs: Any) -> Any:
        headers = kwargs.pop("headers", {})
        if "API_KEYS" in self.extra_env:
            headers["X-API-Key"] = self.extra_env["API_KEYS"].split(",")[0]
        resp = httpx.request(
            method, (base or self.base) + path, headers=headers, timeout=10.0, **kwargs
        )
        resp.raise_for_status()
        return resp.json()

    def send(
        self, *numbers: str, text: str = "Your code is 482193", base: str | None = None
    ) -> list[int]:
        body = {"to": list(numbers), "text": text, "type": "sms"}
        answer = self.api("POST", "/api/messages", base=base, json=body)
        return [int(m["id"]) for m in answer["messages"]]

    def callback(self, uuid: str, status: str, sequence: int, **extra: str) -> None:
        """Post a status callback signed as the simulator signs (Plivo's wire format).

        Lets a test decide exactly when a message changes status: a callback for a UUID we
        never sent makes a message known only from callbacks.
        """
        fields = callback_fields(uuid, status, Sequence=str(sequence), **extra)
        url = self.base + "/plivo/callback"
        form = {k: [v] for k, v in fields.items()}
        headers = signed_headers("POST", url, form, SIMULATOR_TOKEN, new_nonce())
        resp = httpx.post(url, data=fields, headers=headers, timeout=10.0)
        assert resp.status_code == 200, resp.text

    def inbound(self, sender: str, text: str | None = None, media: Sequence[str] = ()) -> int:
        """A message from `sender` to our number, as Plivo delivers it: `plivo-tracker
        simulate` (started on first use, its message_url this server's /plivo/inbound) is asked
        with POST /_simulator/inbound and posts it, signed, to the server. Returns its id once
        the API shows it (the server's 200 means journaled; the message follows)."""
        if self.simulator is None:
            self.simulator = self.stack.enter_context(
                simulator_process(
                    self.tmp_path,
                    "--message-url",
                    self.base + "/plivo/inbound",
                    "--number",
                    OUR_NUMBER.lstrip("+"),
                    token=SIMULATOR_TOKEN,
                )
            )
        body: dict[str, Any] = {"from": sender, "to": OUR_NUMBER}
        if text is not None:
            body["text"] = text
        if media:
            body["media"] = list(media)
        resp = httpx.post(self.simulator + "/_simulator/inbound", json=body, timeout=10.0)
        assert resp.status_code == 200, resp.text
        answer = resp.json()
        assert answer["http_status"] == 200, answer  # what our /plivo/inbound answered
        return self.inbound_id(answer["message_uuid"])

    def inbound_signed(self, fields: dict[str, str]) -> int:
        """Plivo's fields of an inbound message (`simulator.inbound.incoming_fields`) posted
        to /plivo/inbound, signed as the simulator signs: for payloads no simulator request
        makes (media URLs that are not http(s)). Returns the message's id once the API shows
        it."""
        url = self.base + "/plivo/inbound"
        form = {k: [v] for k, v in fields.items()}
        headers = signed_headers("POST", url, form, SIMULATOR_TOKEN, new_nonce())
        resp = httpx.post(url, data=fields, headers=headers, timeout=10.0)
        assert resp.status_code == 200, resp.text
        return self.inbound_id(fields["MessageUUID"])

    def inbound_id(self, message_uuid: str, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            resp = httpx.get(
                f"{self.base}/api/messages/{message_uuid}", headers=self._headers(), timeout=10.0
            )
            if resp.status_code == 200:
                assert resp.json()["direction"] == "inbound"
                return int(resp.json()["id"])
            assert resp.status_code == 404, resp.text
            time.sleep(0.05)
        pytest.fail(f"inbound message {message_uuid} not shown after {timeout}s")

    def _headers(self) -> dict[str, str]:
        if "API_KEYS" in self.extra_env:
            return {"X-API-Key": self.extra_env["API_KEYS"].split(",")[0]}
        return {}

    def wait_dispatched(self, timeout: float = 60.0) -> None:
        """Until no message waits in `accepted` (each has its MessageUUID from Plivo)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.api("GET", "/api/messages?status=accepted&limit=1")["messages"]:
                return
            time.sleep(0.25)
        pytest.fail(f"messages still accepted after {timeout}s")

    def wait_final(
        self, ids: list[int], base: str | None = None, timeout: float = 60.0
    ) -> dict[int, str]:
        """Poll the API until every message has a final status (the simulator takes 1–11 s)."""
        deadline = time.monotonic() + timeout
        statuses: dict[int, str] = {}
        while time.monotonic() < deadline:
            statuses = {i: self.api("GET", f"/api/messages/{i}", base=base)["status"] for i in ids}
            if all(s in FINAL for s in statuses.values()):
                return statuses
            time.sleep(0.25)
        pytest.fail(f"messages not final after {timeout}s: {statuses}")


def start_server(
    tmp_path: Path, database_url: str, name: str, port: int | None, extra_env: dict[str, str]
) -> Server:
    port = port or free_port()
    server = Server(
        tmp_path,
        database_url,
        name,
        PORT=str(port),
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        PLIVO_AUTH_ID="",
        PLIVO_AUTH_TOKEN="",
        SIMULATOR_AUTH_TOKEN=SIMULATOR_TOKEN,
        SPOOL_DIR=str(tmp_path / f"spool-{name}"),
        # Messages these tests count are theirs alone: no resends appear unless a test asks.
        # Simulator mode on loopback: keyless, as a new user's first run (unless a test asks).
        **{"RESEND_ERROR_CODES": "none", "API_KEYS": "", **extra_env},
    )
    server.wait_healthy()
    return server


def launch(playwright: Playwright) -> Browser:
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing (scripts/test installs Debian's chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@pytest.fixture
def server_env() -> dict[str, str]:
    """Extra environment for the servers (overridden by tests that need API keys)."""
    return {}


@pytest.fixture
def dashboard(
    request: pytest.FixtureRequest, tmp_path: Path, db_url: str, server_env: dict[str, str]
) -> Iterator[Dashboard]:
    callspec = getattr(request.node, "callspec", None)
    name = str(callspec.params.get("db_url", "db")) if callspec else "db"
    servers: list[Server] = []
    # The database fixture has run (asyncio.run) before Playwright's loop starts below.
    servers.append(start_server(tmp_path, db_url, "serve", None, server_env))
    try:
        with sync_playwright() as playwright:
            browser = launch(playwright)
            dash = Dashboard(tmp_path, db_url, name, browser, servers[0], server_env, servers)
            try:
                yield dash
            finally:
                for context in dash.contexts:
                    context.close()
                browser.close()
                dash.stack.close()
    finally:
        for server in servers:
            server.stop(graceful=True)
    for server in servers:
        assert "Traceback" not in server.log_text(), server.log_text()
