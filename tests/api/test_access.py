"""Access rules (web/access.py, web/throttle.py): required keys, the host allow-list, JSON-only
same-origin writes, protected docs and metrics, rate limits, security headers, body limits.

Each test is an attack or a rule that the service had no answer to before: the API was open
without keys behind a proxy, any Host was answered, a cross-site form could reach the API, and
nothing limited request rates.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from plivo_tracker.app import create_app
from plivo_tracker.config import ConfigError, Settings
from tests.api.test_inbound import inbound_fields
from tests.conftest import API_KEY, AUTH, callback_fields, new_uuid, signed_form

SEND = {"to": "+14155550123", "text": "hi", "from": "+14155550100"}

Opener = Callable[..., contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def open_app(make_settings: Callable[..., Settings], db_url: str) -> Opener:
    """open_app(client_address, **settings) → a client of a fresh app on `db_url`."""

    @contextlib.asynccontextmanager
    async def _open(
        address: str = "203.0.113.7", *, headers: dict[str, str] | None = None, **overrides: Any
    ) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(make_settings(database_url=db_url, **overrides), dispatch=False)
        async with LifespanManager(app):
            transport = httpx.ASGITransport(app=app, client=(address, 40000))
            async with httpx.AsyncClient(
                transport=transport, base_url="http://testserver", headers=headers or {}
            ) as c:
                yield c

    return _open


# --- API keys are required where the API can do harm -----------------------------------------


def test_credentials_without_api_keys_refuse_to_build_the_app(
    make_settings: Callable[..., Settings],
) -> None:
    with pytest.raises(ConfigError, match="^API_KEYS: required with Plivo credentials"):
        create_app(make_settings(api_keys=None))


def test_a_public_host_without_api_keys_refuses_to_build_the_app(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        api_keys=None, plivo_auth_id=None, plivo_auth_token=None, host="0.0.0.0"
    )
    with pytest.raises(ConfigError, match="^API_KEYS: required to listen on 0.0.0.0"):
        create_app(settings)


def test_simulator_mode_on_loopback_stays_keyless(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(api_keys=None, plivo_auth_id=None, plivo_auth_token=None)
    assert settings.api_keys == []
    create_app(settings)  # the README's first command: no key needed


@pytest.mark.parametrize("keys", ["short", f"{'k' * 40},{'s' * 31}"])
def test_short_keys_are_refused(make_settings: Callable[..., Settings], keys: str) -> None:
    with pytest.raises(ConfigError, match="^API_KEYS: every key must be at least 32"):
        make_settings(api_keys=keys)


async def test_every_api_route_needs_the_key(open_app: Opener) -> None:
    async with open_app() as client:
        for method, path in [
            ("GET", "/api/messages"),
            ("GET", "/api/messages/1"),
            ("GET", "/api/stats"),
            ("GET", "/api/conversations"),
            ("GET", "/api/conversations/+14155550101"),
            ("GET", "/api/dispatch"),
            ("POST", "/api/messages"),
            ("POST", "/api/messages/validate"),
            ("POST", "/api/dispatch/pause"),
            ("GET", "/api/no-such-route"),
        ]:
            resp = await client.request(method, path, json=SEND)
            assert resp.status_code == 401, (method, path)
            assert resp.headers["www-authenticate"] == "Bearer"
            assert resp.json()["error"]["code"] == "unauthorized"
        ok = await client.get("/api/messages", headers={"Authorization": f"Bearer {API_KEY}"})
        assert ok.status_code == 200


# --- the host allow-list ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/messages", "/", "/health", "/docs", "/plivo/callback"])
async def test_dns_rebinding_is_refused(open_app: Opener, path: str) -> None:
    """A page on rebind.attacker.example whose name now resolves to this server is
    same-origin to the browser: its requests carry the key-less dashboard's cookies-free
    requests, but still its own Host name."""
    attacker = "rebind.attacker.example:8000"
    headers = {**AUTH, "Host": attacker, "Origin": f"http://{attacker}"}
    async with open_app() as client:
        resp = await client.get(path, headers=headers)
        assert resp.status_code == 400
        assert resp.json()["error"]["code"] == "host_not_allowed"


@pytest.mark.parametrize(
    "host", ["hooks.example.com", "localhost:8000", "127.0.0.1:8000", "[::1]:8000", "testserver"]
)
async def test_allowed_hosts(open_app: Opener, host: str) -> None:
    async with open_app(headers=AUTH) as client:
        assert (await client.get("/api/messages", headers={"Host": host})).status_code == 200


async def test_default_allowed_hosts_are_the_public_url_and_loopback(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(allowed_hosts=None)
    assert settings.hosts == frozenset({"hooks.example.com", "localhost", "127.0.0.1", "::1"})
    assert make_settings(allowed_hosts="*").hosts is None


async def test_unknown_host_refused_for_callbacks_too(open_app: Opener) -> None:
    target, body, headers = signed_form(callback_fields(new_uuid(), "sent"))
    async with open_app() as client:
        refused = await client.post(target, content=body, headers={**headers, "Host": "evil.test"})
        assert refused.status_code == 400
        accepted = await client.post(target, content=body, headers=headers)
        assert accepted.status_code == 200


# --- writes: JSON only, same origin only -------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
async def test_writes_must_be_json(open_app: Opener, content_type: str | None) -> None:
    headers = dict(AUTH)
    if content_type:
        headers["Content-Type"] = content_type
    async with open_app() as client:
        resp = await client.post(
            "/api/messages", content=b'{"to": "+14155550123"}', headers=headers
        )
        assert resp.status_code == 415
        assert resp.json()["error"]["code"] == "unsupported_media_type"
        listed = await client.get("/api/messages", headers=AUTH)
        assert listed.json()["messages"] == []


async def test_json_with_a_charset_is_json(open_app: Opener) -> None:
    headers = {**AUTH, "Content-Type": "application/json; charset=utf-8"}
    async with open_app() as client:
        resp = await client.post("/api/messages/validate", content=b'{"to": "x"}', headers=headers)
        assert resp.status_code == 200


async def test_cross_site_post_is_refused_even_without_keys(
    make_settings: Callable[..., Settings], db_url: str
) -> None:
    """The keyless simulator on loopback: a page on another site posts to it (a form, or a
    fetch that dares the preflight). Neither sends an SMS."""
    settings = make_settings(
        database_url=db_url, api_keys=None, plivo_auth_id=None, plivo_auth_token=None
    )
    app = create_app(settings, dispatch=False)
    evil = {"Origin": "https://evil.example.com", "Host": "127.0.0.1:8000"}
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as c:
            form = await c.post("/api/messages", data={"to": "+14155550123"}, headers=evil)
            assert form.status_code == 403
            fetched = await c.post("/api/messages", json=SEND, headers=evil)
            assert fetched.status_code == 403
            assert fetched.json()["error"]["code"] == "cross_origin"
            null = await c.post("/api/messages", json=SEND, headers={"Origin": "null"})
            assert null.status_code == 403
            own = await c.post(
                "/api/messages", json=SEND, headers={"Origin": "http://127.0.0.1:8000"}
            )
            assert own.status_code == 202  # the dashboard itself
            assert len((await c.get("/api/messages")).json()["messages"]) == 1


# --- docs and metrics follow the API's rule --------------------------------------------------


@pytest.mark.parametrize("path", ["/docs", "/openapi.json", "/metrics"])
async def test_docs_and_metrics_need_the_key(open_app: Opener, path: str) -> None:
    async with open_app() as client:
        assert (await client.get(path)).status_code == 401
        assert (await client.get(path, headers=AUTH)).status_code == 200
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/ready")).status_code == 200
        assert (await client.get("/")).status_code == 200  # the page holds no data


async def test_public_endpoints_opens_docs_and_metrics(open_app: Opener) -> None:
    async with open_app(public_endpoints="docs,metrics") as client:
        for path in ("/docs", "/openapi.json", "/metrics"):
            assert (await client.get(path)).status_code == 200
        assert (await client.get("/api/messages")).status_code == 401


def test_public_endpoints_names_only_what_exists(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError, match="^PUBLIC_ENDPOINTS"):
        make_settings(public_endpoints="docs,api")


# --- rate limits -------------------------------------------------------------------------------


async def test_api_rate_per_address_answers_429_with_retry_after(open_app: Opener) -> None:
    async with open_app(headers=AUTH, rate_limit_api="5/minute") as client:
        answers = [(await client.get("/api/messages")).status_code for _ in range(8)]
        assert answers == [200] * 5 + [429] * 3
        limited = await client.get("/api/messages")
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert limited.json()["error"]["code"] == "rate_limited"
        assert (await client.get("/health")).status_code == 200  # only /api is limited


async def test_api_rate_per_key_across_addresses(
    make_settings: Callable[..., Settings], db_url: str
) -> None:
    """One key from many addresses still meets its own limit."""
    app = create_app(make_settings(database_url=db_url, rate_limit_api="6/minute"), dispatch=False)
    async with LifespanManager(app):
        answers = []
        for i in range(9):
            transport = httpx.ASGITransport(app=app, client=(f"198.51.100.{i}", 1))
            async with httpx.AsyncClient(
                transport=transport, base_url="http://testserver", headers=AUTH
            ) as c:
                answers.append((await c.get("/api/messages")).status_code)
    assert answers == [200] * 6 + [429] * 3


async def test_guessing_keys_meets_429_and_the_address_stays_blocked(
    make_settings: Callable[..., Settings], db_url: str
) -> None:
    """A few hundred wrong keys from one address: after the failure budget every request from
    it is 429, even one with the right key; another address is not affected."""
    app = create_app(make_settings(database_url=db_url), dispatch=False)
    async with LifespanManager(app):
        attacker = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("203.0.113.66", 1)),
            base_url="http://testserver",
        )
        neighbour = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("203.0.113.67", 1)),
            base_url="http://testserver",
        )
        async with attacker, neighbour:
            codes = []
            for _ in range(300):
                guess = {"X-API-Key": secrets.token_urlsafe(32)}
                codes.append((await attacker.get("/api/messages", headers=guess)).status_code)
            assert set(codes[:30]) == {401}
            assert set(codes[30:]) == {429}
            right = await attacker.get("/api/messages", headers=AUTH)
            assert right.status_code == 429
            assert int(right.headers["retry-after"]) >= 1
            assert (await neighbour.get("/api/messages", headers=AUTH)).status_code == 200


async def test_failed_callbacks_are_limited_but_genuine_ones_never(open_app: Opener) -> None:
    async with open_app(rate_limit_callback_failures="20/minute") as client:
        target, body, headers = signed_form(callback_fields(new_uuid(), "sent"))
        forged = {**headers, "X-Plivo-Signature-V3": "bm90IGEgc2lnbmF0dXJl"}
        forged.pop("X-Plivo-Signature-V2", None)
        codes = [
            (await client.post(target, content=body, headers=forged)).status_code for _ in range(30)
        ]
        assert codes == [403] * 20 + [429] * 10
        # The same address (Plivo's, say, behind the same proxy) still gets through when the
        # signature is genuine.
        for status in ("queued", "sent", "delivered"):
            target, body, headers = signed_form(callback_fields(new_uuid(), status))
            resp = await client.post(target, content=body, headers=headers)
            assert resp.status_code == 200, resp.text


async def test_failed_inbound_messages_share_the_callback_limit(open_app: Opener) -> None:
    """/plivo/inbound is verified like /plivo/callback, and its failures count in the same
    RATE_LIMIT_CALLBACK_FAILURES budget; a genuine inbound message (a STOP, say) still passes."""

    def forged(fields: dict[str, str], path: str) -> tuple[str, bytes, dict[str, str]]:
        target, body, headers = signed_form(fields, path=path)
        headers = {**headers, "X-Plivo-Signature-V3": "bm90IGEgc2lnbmF0dXJl"}
        headers.pop("X-Plivo-Signature-V2", None)
        return target, body, headers

    async with open_app(rate_limit_callback_failures="20/minute") as client:
        requests = [forged(callback_fields(new_uuid(), "sent"), "/plivo/callback")] * 10
        requests += [forged(inbound_fields(new_uuid(), "START"), "/plivo/inbound")] * 20
        codes = [
            (await client.post(target, content=body, headers=headers)).status_code
            for target, body, headers in requests
        ]
        assert codes == [403] * 20 + [429] * 10
        target, body, headers = signed_form(
            inbound_fields(new_uuid(), "STOP"), path="/plivo/inbound"
        )
        resp = await client.post(target, content=body, headers=headers)
        assert resp.status_code == 200, resp.text


async def test_limits_are_shared_through_redis(
    make_settings: Callable[..., Settings], db_url: str
) -> None:
    """RATE_LIMIT_STORAGE=redis://…: two processes (two apps here) count together."""
    storage = "redis://127.0.0.1:6379/0"
    address = f"192.0.2.{secrets.randbelow(250) + 1}"
    key = "redis-shared-key-" + secrets.token_hex(16)  # a fresh count in the shared store
    settings = make_settings(
        database_url=db_url, api_keys=key, rate_limit_api="4/minute", rate_limit_storage=storage
    )
    first, second = create_app(settings, dispatch=False), create_app(settings, dispatch=False)
    async with LifespanManager(first), LifespanManager(second):
        answers = []
        for app in (first, second, first, second, first, second):
            transport = httpx.ASGITransport(app=app, client=(address, 1))
            async with httpx.AsyncClient(
                transport=transport, base_url="http://testserver", headers={"X-API-Key": key}
            ) as c:
                answers.append((await c.get("/api/messages")).status_code)
    assert answers == [200, 200, 200, 200, 429, 429]


def test_rates_are_validated(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError, match="^RATE_LIMIT_API: 'lots' is not a rate"):
        make_settings(rate_limit_api="lots")
    with pytest.raises(ConfigError, match="^RATE_LIMIT_STORAGE"):
        make_settings(rate_limit_storage="postgres://x")
    assert make_settings(rate_limit_api="off").rate_limit_api == "off"


# --- security headers on every response ------------------------------------------------------


async def test_security_headers_on_every_response(client: httpx.AsyncClient) -> None:
    target, body, headers = signed_form(callback_fields(new_uuid(), "sent"))
    responses = {
        "api": await client.get("/api/messages"),
        "not found": await client.get("/api/messages/999999"),
        "page": await client.get("/"),
        "static": await client.get("/static/app.js"),
        "docs": await client.get("/docs"),
        "health": await client.get("/health"),
        "callback": await client.post(target, content=body, headers=headers),
        "forged callback": await client.post(target, content=body),
        "unknown": await client.get("/nothing-here"),
    }
    for name, resp in responses.items():
        assert resp.headers["x-content-type-options"] == "nosniff", name
        assert resp.headers["referrer-policy"] == "no-referrer", name
        # The public URL of the test settings is https: browsers must keep to it.
        assert resp.headers["strict-transport-security"] == "max-age=31536000", name
        assert "frame-ancestors 'none'" in resp.headers["content-security-policy"], name
    assert responses["api"].headers["content-security-policy"].startswith("default-src 'none'")
    assert "script-src 'self'" in responses["page"].headers["content-security-policy"]


async def test_no_hsts_over_plain_http(open_app: Opener) -> None:
    async with open_app(
        public_base_url="http://127.0.0.1:8000", allow_private_callback_url=True
    ) as client:
        resp = await client.get("/health")
        assert "strict-transport-security" not in resp.headers
        assert resp.headers["x-content-type-options"] == "nosniff"


# --- the body limit counts bytes everywhere --------------------------------------------------


async def _chunks(size: int) -> AsyncIterator[bytes]:
    for _ in range(size // 4096):
        yield b"x" * 4096


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/messages"),
        ("DELETE", "/api/messages/1"),
        ("POST", "/api/messages"),
        ("PUT", "/nothing-here"),
        ("GET", "/health"),
        ("POST", "/plivo/callback"),
    ],
)
async def test_oversize_bodies_are_413_with_or_without_a_length(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    announced = await client.request(method, path, content=b"x" * (64 * 1024 + 1))
    assert announced.status_code == 413, announced.text
    chunked = await client.request(method, path, content=_chunks(80 * 1024))
    assert "content-length" not in chunked.request.headers
    assert chunked.status_code == 413, chunked.text
    assert (await client.get("/health")).status_code == 200


async def test_a_failing_limiter_storage_lets_requests_through(open_app: Opener) -> None:
    """Redis down: the limiter fails open (logged and counted), the service keeps serving."""
    from plivo_tracker import metrics

    before = metrics.RATE_LIMIT_ERRORS._value.get()
    async with open_app(
        headers=AUTH, rate_limit_api="2/minute", rate_limit_storage="redis://127.0.0.1:1/0"
    ) as client:
        answers = [(await client.get("/api/messages")).status_code for _ in range(4)]
    assert answers == [200] * 4
    assert metrics.RATE_LIMIT_ERRORS._value.get() > before
