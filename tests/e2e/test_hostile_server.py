"""The hostile-input corpus against a real `serve` process: every answer a 4xx, and the server
log free of uvicorn's "Exception in ASGI application" and of tracebacks (issue 9)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import AUTH
from tests.e2e.server import Server
from tests.hostile import all_requests


def test_hostile_input_over_real_http_never_reaches_the_server_log(
    tmp_path: Path, database: str
) -> None:
    server = Server(
        tmp_path, database, "hostile", PLIVO_AUTH_ID="", PLIVO_AUTH_TOKEN="", LOG_LEVEL="info"
    )
    try:
        server.wait_healthy()
        answers: dict[str, int] = {}
        # With the key, so that every hostile request reaches the parsers behind it.
        with httpx.Client(base_url=server.base, timeout=10.0, headers=AUTH) as client:
            for name, (method, target, body, headers) in all_requests().items():
                resp = client.request(method, target, content=body, headers=headers)
                answers[name] = resp.status_code
                if resp.headers.get("content-type", "").startswith("text/plain"):
                    # The HTTP parser's own 400 (e.g. control bytes in a header): the app never
                    # saw the request.
                    assert resp.status_code == 400, name
                    continue
                assert resp.headers.get("x-content-type-options") == "nosniff", name
        bad = {name: code for name, code in answers.items() if not 400 <= code < 500}
        assert bad == {}
        for query in ("?since=%00", "?status=%FF", "?message_id=%ED%A0%80"):
            with connect(f"ws://127.0.0.1:{server.port}/ws{query}", open_timeout=10) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    ws.recv(timeout=10)
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 4400
        # The server still works after all of it.
        sent = httpx.post(
            server.base + "/api/messages",
            json={"to": "+14155550101", "text": "still here"},
            headers=AUTH,
        )
        assert sent.status_code == 202
    finally:
        server.stop(graceful=True)
    log = server.log_text()
    assert "Exception in ASGI application" not in log
    assert "Traceback" not in log
    assert '"http.unhandled"' not in log
