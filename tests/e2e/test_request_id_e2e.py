"""A real `serve` process: uvicorn's access lines are JSON through structlog, with the request
id that the response's X-Request-ID carries, and no phone number from the query string."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import AUTH
from tests.e2e.server import Server

pytestmark = pytest.mark.slow


def test_access_lines_are_json_with_the_responses_request_id(tmp_path: Path) -> None:
    server = Server(
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'rid.db'}",
        "request-id",
        PLIVO_AUTH_ID="",
        PLIVO_AUTH_TOKEN="",
        LOG_LEVEL="info",
        LOG_FORMAT="json",
    )
    try:
        server.wait_healthy()
        with httpx.Client(base_url=server.base, timeout=10.0, headers=AUTH) as client:
            made = client.get("/health")
            kept = client.get(
                "/api/messages", params={"to": "+14155550101"}, headers={"X-Request-ID": "e2e-1"}
            )
            refused = client.get("/health", headers={"X-Request-ID": "x" * 65})
            sent = client.post(
                "/api/messages",
                json={"to": "+14155550102", "text": "hi"},
                headers={"X-Request-ID": "e2e-send"},
            )
            # Unsigned: refused, and the app logs `callback.rejected` while handling it.
            unsigned = client.post(
                "/plivo/callback",
                data={"To": "14155550103", "Status": "delivered"},
                headers={"X-Request-ID": "e2e-unsigned"},
            )
    finally:
        server.stop(graceful=True)
    assert (made.status_code, kept.status_code, refused.status_code) == (200, 200, 200)
    assert (sent.status_code, unsigned.status_code) == (202, 403)
    made_id = made.headers["x-request-id"]
    assert len(made_id) == 32
    assert kept.headers["x-request-id"] == "e2e-1"
    assert refused.headers["x-request-id"] not in ("x" * 65, made_id)

    text = server.log_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line JSON
    access: dict[str, dict[str, Any]] = {
        line["request_id"]: line for line in lines if line.get("event") == "http.access"
    }
    assert access[made_id]["path"] == "/health"
    assert access[made_id]["status"] == 200
    assert access[made_id]["method"] == "GET"
    assert access[made_id]["logger"] == "uvicorn.access"
    assert access[made_id]["duration_ms"] >= 0
    assert access["e2e-1"]["path"] == "/api/messages"  # the query string stays out
    assert access[refused.headers["x-request-id"]]["status"] == 200
    assert (access["e2e-send"]["method"], access["e2e-send"]["status"]) == ("POST", 202)
    assert access["e2e-unsigned"]["path"] == "/plivo/callback"
    # The app's own events during a request carry its id too.
    rejected = [line for line in lines if line.get("event") == "callback.rejected"]
    assert [line["request_id"] for line in rejected] == ["e2e-unsigned"]
    assert any(line.get("logger") == "uvicorn.error" for line in lines)
    assert "4155550101" not in text
    assert "4155550102" not in text
    assert "4155550103" not in text
