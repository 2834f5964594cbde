"""Fuzzing every documented operation from the app's own OpenAPI document (schemathesis).

For each operation, on SQLite and on PostgreSQL, schemathesis runs its coverage phase
(boundary values, every parameter missing or of the wrong type, other methods and content
types) and then generates requests that the schema allows (positive) and requests that break
it (negative). No response may be a 5xx, and each must be JSON wherever the document says
JSON. After an operation's fuzzing, the same process must still be healthy: `/health` and
`/ready` answer 200, and a normal send followed by a read of that message works.

Requests go in process through schemathesis' ASGI transport, which runs the app's lifespan on
its own event loop: `from_asgi` starts it, the fixture's teardown ends it (and fails if the
app does not stop cleanly). Examples are derandomized, so every run sends the same requests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.generation.hypothesis.builder import (
    HypothesisTestConfig,
    HypothesisTestMode,
    create_test,
)
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import content_type_conformance
from schemathesis.specs.openapi.schemas import OpenApiSchema

from plivo_tracker.app import create_app
from plivo_tracker.config import Settings
from plivo_tracker.inbound.routes import CallbackEndpoint

API_KEY = "fuzz-" + "k" * 35  # 40 characters
AUTH = {"X-API-Key": API_KEY}
SENDER = "14155550100"
EXAMPLES = 100  # generated per operation, positive and negative, after the coverage phase

# Every operation of the document (test_every_documented_operation_is_fuzzed keeps this honest).
OPERATIONS = [
    ("GET", "/plivo/callback"),
    ("POST", "/plivo/callback"),
    ("GET", "/plivo/inbound"),
    ("POST", "/plivo/inbound"),
    ("GET", "/api/messages"),
    ("POST", "/api/messages"),
    ("GET", "/api/messages/{ref}"),
    ("POST", "/api/messages/validate"),
    ("POST", "/api/messages/{message_id}/resolve"),
    ("GET", "/api/stats"),
    ("GET", "/api/conversations"),
    ("GET", "/api/conversations/{number}"),
    ("GET", "/api/dispatch"),
    ("POST", "/api/dispatch/pause"),
    ("POST", "/api/dispatch/resume"),
    ("GET", "/api/opt-outs"),
    ("GET", "/api/opt-outs/{number}"),
    ("PUT", "/api/opt-outs/{number}"),
    ("DELETE", "/api/opt-outs/{number}"),
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
]

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    # explicit = schemathesis' coverage phase; no `explain` (slow, and shrinking says enough).
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
)
CHECKS = [not_a_server_error, content_type_conformance]


# Thousands of hostile requests from one address: the rate limits (tested on their own in
# test_access.py) would answer 429 before the parsers under test see anything.
UNLIMITED = {
    "rate_limit_api": "off",
    "rate_limit_auth_failures": "off",
    "rate_limit_callback_failures": "off",
    "rate_limit_ws_connect": "off",
}


@pytest.fixture
def fuzz_app(make_settings: Callable[..., Settings], db_url: str) -> CallbackEndpoint:
    return create_app(
        make_settings(database_url=db_url, api_keys=API_KEY, plivo_src=SENDER, **UNLIMITED),
        migrate=False,
        dispatch=False,
    )


@pytest.fixture
def api_schema(fuzz_app: CallbackEndpoint) -> Iterator[OpenApiSchema]:
    """The app's own /openapi.json; loading it starts the app's lifespan."""
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", fuzz_app, headers=AUTH)
    finally:
        shutdown_lifespans()  # the engine, committer and hub stop cleanly, or this fails


def _fuzz(schema: OpenApiSchema, method: str, path: str) -> None:
    """Schemathesis' coverage phase, then EXAMPLES positive and negative cases.

    `create_test` is the builder behind schemathesis' own `schema.parametrize()`; it is called
    directly so that one test owns the app's lifespan from the first request to the health
    checks after the last one (the pytest integration ends lifespans between its tests).
    """

    @FUZZ
    def check(case: Case) -> None:
        response = case.call(headers=AUTH)
        case.validate_response(response, checks=CHECKS)

    config = HypothesisTestConfig(project=schema.config, modes=list(HypothesisTestMode))
    create_test(operation=schema[path][method], test_func=check, config=config)()


def _call(schema: OpenApiSchema, method: str, path: str, **parts: Any) -> Any:
    case = schema[path][method].Case(headers=AUTH, **parts)
    return case.call()


def _assert_healthy(schema: OpenApiSchema) -> None:
    for path in ("/health", "/ready"):
        resp = _call(schema, "GET", path)
        assert resp.status_code == 200, (path, resp.text)
    sent = _call(
        schema,
        "POST",
        "/api/messages",
        body={"to": "+14155550101", "text": "still working"},
        media_type="application/json",
    )
    assert sent.status_code == 202, sent.text
    message_id = sent.json()["messages"][0]["id"]
    read = _call(schema, "GET", "/api/messages/{ref}", path_parameters={"ref": str(message_id)})
    assert read.status_code == 200, read.text
    assert read.json()["text"] == "still working"


def test_every_documented_operation_is_fuzzed(api_schema: OpenApiSchema) -> None:
    documented = {
        (method.upper(), path)
        for path, item in api_schema.raw_schema["paths"].items()
        for method in item
    }
    assert documented == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_fuzzed_operation_never_answers_5xx(
    api_schema: OpenApiSchema, method: str, path: str
) -> None:
    _fuzz(api_schema, method, path)
    _assert_healthy(api_schema)
