"""uvicorn's own lines through structlog (logging.uvicorn_log_config) and the request id
middleware (web/request_id.py)."""

from __future__ import annotations

import json
import logging
import logging.config
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
import uvicorn
from starlette.types import Message, Receive, Scope, Send

from plivo_tracker.logging import request_started, stdlib_formatter, uvicorn_log_config
from plivo_tracker.web.request_id import RequestId, incoming_id

UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


# What uvicorn's HTTP protocols log for every response (protocols/http/*_impl.py).
ACCESS_FORMAT = '%s - "%s %s HTTP/%s" %d'


def access_args(target: str, status: int = 200) -> tuple[str, str, str, str, int]:
    return ("127.0.0.1:50000", "GET", target, "1.1", status)


def access_record(target: str, status: int = 200) -> logging.LogRecord:
    return logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        ACCESS_FORMAT,
        access_args(target, status),
        None,
    )


def test_access_record_is_json_with_request_id_and_masked_path() -> None:
    formatter = stdlib_formatter("json")
    record = access_record("/api/numbers/%2B14155550101/messages?to=%2B14155550100&x=1", 404)
    with structlog.contextvars.bound_contextvars(request_id="req-abc"):
        out = json.loads(formatter.format(record))
    assert out["event"] == "http.access"
    assert out["request_id"] == "req-abc"
    assert out["logger"] == "uvicorn.access"
    assert out["level"] == "info"
    assert (out["client"], out["method"], out["http_version"], out["status"]) == (
        "127.0.0.1:50000",
        "GET",
        "1.1",
        404,
    )
    # The number in the path is masked; the query string (which may hold more) is left out.
    assert out["path"] == "/api/numbers/%2B141******01/messages"
    assert "4155550101" not in json.dumps(out)
    assert "4155550100" not in json.dumps(out)
    assert "timestamp" in out
    assert "duration_ms" not in out  # not timed outside the middleware
    assert "positional_args" not in out
    assert "_record" not in out


def test_access_record_has_the_duration_the_middleware_started() -> None:
    token = request_started.set(0.0)  # perf_counter's origin: a duration of the process' age
    try:
        out = json.loads(stdlib_formatter("json").format(access_record("/health")))
    finally:
        request_started.reset(token)
    assert out["duration_ms"] > 0
    assert "request_started" not in out


def test_error_record_keeps_its_message_masked_with_the_exception() -> None:
    try:
        raise ValueError("bad number +1 415 555 0101")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "uvicorn.error",
        logging.ERROR,
        __file__,
        1,
        "Exception in ASGI application for %s",
        ("+14155550101",),
        exc_info,
    )
    out = json.loads(stdlib_formatter("json").format(record))
    assert out["event"] == "Exception in ASGI application for +141******01"
    assert out["level"] == "error"
    assert "ValueError: bad number +1 41* *** **01" in out["exception"]
    assert "4155550101" not in json.dumps(out)


@pytest.fixture
def restore_uvicorn_loggers() -> Iterator[None]:
    saved = [
        (logging.getLogger(n), logging.getLogger(n).handlers[:], logging.getLogger(n).level)
        for n in UVICORN_LOGGERS
    ]
    propagate = {n: logging.getLogger(n).propagate for n in UVICORN_LOGGERS}
    yield
    for logger, handlers, level in saved:
        logger.handlers = handlers
        logger.setLevel(level)
        logger.propagate = propagate[logger.name]


@pytest.mark.usefixtures("restore_uvicorn_loggers")
def test_uvicorn_config_routes_both_loggers_to_stderr_as_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What `serve` does: uvicorn applies the log_config, then its log_level."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:  # pragma: no cover
        pass

    uvicorn.Config(app, log_config=uvicorn_log_config("json"), log_level="info")
    with structlog.contextvars.bound_contextvars(request_id="rid-1"):
        logging.getLogger("uvicorn.access").info(ACCESS_FORMAT, *access_args("/x?to=14155550101"))
        logging.getLogger("uvicorn.error").info("Uvicorn running on %s", "http://127.0.0.1:8000")
    captured = capsys.readouterr()
    assert captured.out == ""
    access, error = (json.loads(line) for line in captured.err.strip().splitlines())
    assert (access["event"], access["path"], access["request_id"]) == ("http.access", "/x", "rid-1")
    assert error["event"] == "Uvicorn running on http://127.0.0.1:8000"
    assert error["logger"] == "uvicorn.error"


@pytest.mark.usefixtures("restore_uvicorn_loggers")
def test_access_log_off_still_silences_the_access_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:  # pragma: no cover
        pass

    uvicorn.Config(app, log_config=uvicorn_log_config("json"), access_log=False)
    logging.getLogger("uvicorn.access").info(ACCESS_FORMAT, *access_args("/x"))
    assert capsys.readouterr().err == ""


# -- the middleware ---------------------------------------------------------------------------


class _Inner:
    """An app that records the request id bound while it runs, and answers 204."""

    def __init__(self) -> None:
        self.state = object()
        self.seen: list[Any] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.seen.append(structlog.contextvars.get_contextvars().get("request_id"))
        if scope["type"] == "lifespan":
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.accept", "headers": [(b"x-request-id", b"app's")]})
            return
        await send({"type": "http.response.start", "status": 204, "headers": [(b"a", b"b")]})
        await send({"type": "http.response.body", "body": b""})


async def _call(app: RequestId, scope: Scope) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:  # pragma: no cover - the inner app never reads
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def _scope(*headers: tuple[bytes, bytes], kind: str = "http") -> Scope:
    return {"type": kind, "path": "/", "headers": list(headers)}


def _id_header(message: Message) -> list[bytes]:
    return [v for k, v in message["headers"] if k == b"x-request-id"]


async def test_a_sane_incoming_id_is_kept_bound_and_echoed() -> None:
    inner = _Inner()
    sent = await _call(RequestId(inner), _scope((b"X-Request-ID", b"trace-42/ok")))
    assert inner.seen == ["trace-42/ok"]
    assert _id_header(sent[0]) == [b"trace-42/ok"]
    assert (b"a", b"b") in sent[0]["headers"]
    assert structlog.contextvars.get_contextvars().get("request_id") is None  # reset after


@pytest.mark.parametrize(
    "value",
    [b"x" * 65, b"", b"has space", b"caf\xc3\xa9", b"tab\there", b"new\nline", b"\x7f"],
)
async def test_an_insane_incoming_id_is_replaced(value: bytes) -> None:
    inner = _Inner()
    sent = await _call(RequestId(inner), _scope((b"x-request-id", value)))
    (given,) = _id_header(sent[0])
    assert given != value
    assert len(given) == 32
    assert inner.seen == [given.decode()]


async def test_each_request_gets_its_own_id() -> None:
    inner = _Inner()
    app = RequestId(inner)
    first = _id_header((await _call(app, _scope()))[0])
    second = _id_header((await _call(app, _scope()))[0])
    assert first != second
    assert inner.seen == [first[0].decode(), second[0].decode()]


def test_incoming_id_limits() -> None:
    assert incoming_id(_scope((b"x-request-id", b"a" * 64))) == "a" * 64
    assert incoming_id(_scope((b"x-request-id", b"a" * 65))) is None
    assert incoming_id(_scope((b"x-request-id", b"one"), (b"x-request-id", b"two"))) == "one"
    assert incoming_id(_scope((b"x-other", b"one"))) is None


async def test_websocket_handshake_carries_the_id_not_the_apps() -> None:
    inner = _Inner()
    sent = await _call(RequestId(inner), _scope((b"x-request-id", b"ws-1"), kind="websocket"))
    assert _id_header(sent[0]) == [b"ws-1"]
    assert inner.seen == ["ws-1"]


async def test_lifespan_passes_through_and_state_is_the_inner_apps() -> None:
    inner = _Inner()
    app = RequestId(inner)
    assert app.state is inner.state
    await _call(app, {"type": "lifespan"})
    assert inner.seen == [None]
