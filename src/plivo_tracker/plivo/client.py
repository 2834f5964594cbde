"""Async client for Plivo's Message API (plivo-protocol.md §1): send, get, list.

One JSON POST with Basic auth and two GETs; no retry loop here (the outbox is the one retry
layer). Every failure is raised as `SendError` with the retry policy's `Failure` kind, so the
caller never has to interpret HTTP: connection refused and 429 mean nothing was sent; a 5xx, a
timeout after the request left, or a success without the documented body are ambiguous (the
message may exist); 401/403/404/405 are about the account; 400 is about the message.

HTTP is aiohttp with a bounded keep-alive pool (docs/adr/0009: about four times cheaper per
request than httpx here). A `Transport` carries the requests: `AiohttpTransport` over the
network, `ASGITransport` to an ASGI app in the same process (the embedded simulator). Each says
only whether a failed request may have left (`MaybeSent`) or surely did not (`NotSent`); what
that means for a message is decided here.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, NoReturn, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from plivo_tracker.outbound.retry import Failure


@dataclass(frozen=True, slots=True)
class Timeout:
    """`total`: how long one call may take, from asking for a connection to the last byte of
    the answer (PLIVO_TIMEOUT_SECONDS). `connect`: how long getting a connection may take (a
    free one from the pool, or a new one); running out of it means nothing was sent."""

    total: float = 10.0
    connect: float = 3.0


DEFAULT_TIMEOUT = Timeout(10.0, connect=3.0)
DEFAULT_POOL = 8
# Idle pooled connections are closed after this, before servers commonly close theirs (uvicorn
# after 5 s): a request written into a connection the server is closing may or may not have
# been read, which for a send means an ambiguous outcome and a lookup.
KEEPALIVE_SECONDS = 4.0


@dataclass(frozen=True, slots=True)
class RawResponse:
    """An HTTP answer: status, headers (looked up by lower-case name), the whole body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class NotSent(Exception):
    """The request never left: connection refused, DNS failure, no connection in time."""


class MaybeSent(Exception):
    """The request may have reached the server: a timeout, reset or broken answer after it
    was (perhaps partly) written."""


class Transport(Protocol):
    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: bytes | None = None,
    ) -> RawResponse: ...

    async def aclose(self) -> None: ...


class AiohttpTransport:
    """HTTP over aiohttp: one session, at most `pool` connections (kept alive, reused), no
    redirects followed, no cookies kept. The session is made on first use, inside the loop.

    A proxy in the environment (HTTP_PROXY / HTTPS_PROXY, NO_PROXY) is used as httpx did; it
    is read once, when the session is made, not per request."""

    def __init__(
        self, base_url: str, headers: Mapping[str, str], timeout: Timeout, pool: int
    ) -> None:
        self._base = base_url.rstrip("/")
        self._headers = dict(headers)
        self.timeout = timeout
        self.pool = pool
        self._session: aiohttp.ClientSession | None = None
        self.proxy: URL | None = None
        self._proxy_auth: aiohttp.BasicAuth | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            try:
                self.proxy, self._proxy_auth = get_env_proxy_for_url(URL(self._base))
            except (LookupError, ValueError):
                self.proxy = self._proxy_auth = None
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self.pool, limit_per_host=0, keepalive_timeout=KEEPALIVE_SECONDS
                ),
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(
                    total=self.timeout.total, connect=self.timeout.connect
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: bytes | None = None,
    ) -> RawResponse:
        session = self._open()
        headers = _JSON_BODY if body is not None else None
        try:
            async with session.request(
                method,
                self._base + path,
                params=params,
                data=body,
                headers=headers,
                allow_redirects=False,  # a 3xx is an answer, never a second request
                proxy=self.proxy,
                proxy_auth=self._proxy_auth,
            ) as resp:
                content = await resp.read()
                return RawResponse(resp.status, resp.headers, content)
        except (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorError) as exc:
            # Before a connection existed (a POST is never retried on another one).
            raise NotSent(f"{type(exc).__name__}: {exc}") from exc
        except aiohttp.InvalidURL as exc:
            raise NotSent(f"{type(exc).__name__}: {exc}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise MaybeSent(
                f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            ) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


_JSON_BODY = {"Content-Type": "application/json"}

ASGIApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[MutableMapping[str, Any]]],
        Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]


class ASGITransport:
    """Requests handed to an ASGI app in this process (no socket): simulator mode's client.
    The total timeout applies; an app that raises is an answer that may have come after the
    message was created (MaybeSent)."""

    def __init__(self, app: ASGIApp, headers: Mapping[str, str], timeout: Timeout) -> None:
        self._app = app
        self._headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()
        ]
        self._timeout = timeout

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: bytes | None = None,
    ) -> RawResponse:
        headers = list(self._headers)
        if body is not None:
            headers += [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": urlencode(params or {}).encode(),
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 0),
            "server": ("simulator", 80),
        }
        answered = asyncio.Event()
        sent_request = False
        status = 0
        answer_headers: dict[str, str] = {}
        chunks: list[bytes] = []

        async def receive() -> MutableMapping[str, Any]:
            nonlocal sent_request
            if not sent_request:
                sent_request = True
                return {"type": "http.request", "body": body or b"", "more_body": False}
            await answered.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers", []):
                    answer_headers[name.decode("latin-1").lower()] = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    answered.set()

        try:
            async with asyncio.timeout(self._timeout.total):
                await self._app(scope, receive, send)
        except TimeoutError as exc:
            raise MaybeSent("TimeoutError: no answer in time") from exc
        except Exception as exc:  # noqa: BLE001 - the app failed: an answer like a 500's
            raise MaybeSent(f"{type(exc).__name__}: {exc}") from exc
        if not answered.is_set():
            raise MaybeSent("the app ended without a whole answer")
        return RawResponse(status, answer_headers, b"".join(chunks))

    async def aclose(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Accepted:
    """HTTP 202: Plivo queued the message; one UUID per valid destination."""

    message_uuids: list[str]
    api_id: str | None = None
    invalid_numbers: list[str] = field(default_factory=list)


class SendError(Exception):
    """A call that did not succeed, classified for the retry policy. `api_id` is Plivo's
    request id when the answer carried one (what Plivo support asks for)."""

    def __init__(
        self,
        failure: Failure,
        detail: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        api_id: str | None = None,
    ) -> None:
        super().__init__(f"{failure.value}: {detail}")
        self.failure = failure
        self.detail = detail
        self.status = status
        self.retry_after = retry_after
        self.api_id = api_id


def _retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def classify_status(status: int) -> Failure:
    """An HTTP error status of the Message API as a failure kind (plivo-protocol.md §1.3)."""
    if status == 401:
        return Failure.UNAUTHORIZED
    if status == 403:
        return Failure.FORBIDDEN
    if status in (404, 405):
        return Failure.MISCONFIGURED
    if status == 429:
        return Failure.RATE_LIMITED
    if status >= 500:
        return Failure.AMBIGUOUS  # the message may exist: reconcile, never resend blindly
    return Failure.REJECTED


def _json(resp: RawResponse) -> Any:
    try:
        return json.loads(resp.body)
    except ValueError:  # not JSON, or not UTF-8
        return None


def _api_id(body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("api_id"), str):
        return str(body["api_id"])[:64]
    return None


def _error_text(resp: RawResponse, body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])[:300]
    return resp.text[:300]


def _raise_for(resp: RawResponse) -> NoReturn:
    body = _json(resp)
    raise SendError(
        classify_status(resp.status),
        _error_text(resp, body),
        status=resp.status,
        retry_after=_retry_after(resp.headers.get("retry-after"), datetime.now(UTC)),
        api_id=_api_id(body),
    )


def request_headers(auth_id: str, auth_token: str) -> dict[str, str]:
    """What every call sends: JSON wanted, who we are, Basic auth."""
    basic = base64.b64encode(f"{auth_id}:{auth_token}".encode()).decode("ascii")
    return {
        "Accept": "application/json",
        "User-Agent": "plivo-tracker",
        "Authorization": f"Basic {basic}",
    }


class PlivoClient:
    """`pool`: the most connections open to Plivo at once (kept alive between calls); the
    dispatcher sizes it to its sends in flight plus room for lookups. `transport` replaces
    HTTP (the in-process simulator)."""

    def __init__(
        self,
        base_url: str,
        auth_id: str,
        auth_token: str,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        pool: int = DEFAULT_POOL,
        transport: Transport | None = None,
    ) -> None:
        self.auth_id = auth_id
        self.transport: Transport = transport or AiohttpTransport(
            base_url, request_headers(auth_id, auth_token), timeout, pool
        )

    @classmethod
    def in_process(
        cls, app: ASGIApp, auth_id: str, auth_token: str, *, timeout: Timeout = DEFAULT_TIMEOUT
    ) -> PlivoClient:
        """A client of an ASGI app in this process (the embedded simulator), no socket."""
        transport = ASGITransport(app, request_headers(auth_id, auth_token), timeout)
        return cls("", auth_id, auth_token, transport=transport)

    async def aclose(self) -> None:
        await self.transport.aclose()

    def _path(self, suffix: str = "") -> str:
        # The trailing slash is part of Plivo's paths.
        return f"/v1/Account/{self.auth_id}/Message/{suffix}"

    async def send(
        self,
        *,
        dst: str,
        src: str | None = None,
        powerpack_uuid: str | None = None,
        text: str | None = None,
        type_: str = "sms",
        media_urls: list[str] | None = None,
        url: str | None = None,
        method: str = "POST",
        options: Mapping[str, Any] | None = None,
    ) -> Accepted:
        """Send to ONE destination (plivo-protocol.md §1.2: UUIDs do not map to destinations).

        `options`: Plivo's optional fields (message_expiry, log, trackable, media_ids, dlt_*),
        `log` as a string as Plivo wants it."""
        if (src is None) == (powerpack_uuid is None):
            raise ValueError("exactly one of src and powerpack_uuid")
        body: dict[str, Any] = {"dst": dst, "type": type_, "method": method, "log": "true"}
        body.update(options or {})
        body["src" if src is not None else "powerpack_uuid"] = src or powerpack_uuid
        if text is not None:
            body["text"] = text
        if media_urls:
            body["media_urls"] = media_urls
        if url is not None:
            body["url"] = url
        # As a JSON library would: compact, UTF-8 (the API refuses lone surrogates before).
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        try:
            resp = await self.transport.request("POST", self._path(), body=content.encode())
        except NotSent as exc:
            raise SendError(Failure.NOT_SENT, str(exc)) from exc
        except MaybeSent as exc:
            # Timeout or reset after the request may have reached Plivo: the message may exist.
            raise SendError(Failure.AMBIGUOUS, str(exc)) from exc
        if resp.status in (200, 201, 202):
            data = _json(resp)
            uuids = data.get("message_uuid") if isinstance(data, dict) else None
            if not isinstance(uuids, list) or not all(isinstance(u, str) and u for u in uuids):
                # A success status without the documented body: Plivo may have created it.
                raise SendError(
                    Failure.AMBIGUOUS,
                    f"{resp.status} without the documented JSON: {resp.text[:200]!r}",
                    status=resp.status,
                    api_id=_api_id(data),
                )
            if not uuids:
                raise SendError(
                    Failure.REJECTED,
                    "no valid destination",
                    status=resp.status,
                    api_id=_api_id(data),
                )
            invalid = data.get("invalid_number") or []
            return Accepted(list(uuids), _api_id(data), [str(n) for n in invalid])
        _raise_for(resp)

    async def _get(self, path: str, params: Mapping[str, str | int] | None = None) -> Any:
        """One authenticated GET; a 200 whose body is not a JSON object is an error too.
        A read creates nothing, so any transport failure is "not sent" (safe to ask again)."""
        try:
            resp = await self.transport.request("GET", path, params=params)
        except (NotSent, MaybeSent) as exc:
            raise SendError(Failure.NOT_SENT, str(exc)) from exc
        if resp.status != 200:
            _raise_for(resp)
        data = _json(resp)
        if not isinstance(data, dict):
            raise SendError(
                Failure.AMBIGUOUS, f"200 that is not a JSON object: {resp.text[:200]!r}", status=200
            )
        return data

    async def get_account(self) -> dict[str, Any]:
        """Account details: the cheapest authenticated read (the pause probe, `doctor`)."""
        data: dict[str, Any] = await self._get(f"/v1/Account/{self.auth_id}/")
        return data

    async def get_message(self, message_uuid: str) -> dict[str, Any] | None:
        """The MDR of one message, or None when Plivo does not know it (404)."""
        try:
            data: dict[str, Any] = await self._get(self._path(f"{message_uuid}/"))
        except SendError as exc:
            if exc.status == 404:
                return None
            raise
        return data

    async def list_page(self, params: Mapping[str, str | int]) -> dict[str, Any]:
        """One page of List Messages: `{"meta": {..., "next"}, "objects": [...]}`, checked.

        Anything but that shape raises (an error body, or not JSON, is never "no messages").
        Callers budget Plivo's 20 requests/minute for List.
        """
        data = await self._get(self._path(), params)
        if not isinstance(data.get("objects"), list) or not isinstance(data.get("meta"), dict):
            raise SendError(Failure.AMBIGUOUS, "List Messages answer without meta/objects")
        objects = data["objects"]
        if not all(isinstance(o, dict) for o in objects):
            raise SendError(Failure.AMBIGUOUS, "List Messages objects are not all MDRs")
        return dict(data)


def next_page_params(meta: Mapping[str, Any]) -> dict[str, str] | None:
    """The query of the next page from `meta.next` (a path with a query, or null)."""
    nxt = meta.get("next")
    if not nxt or not isinstance(nxt, str):
        return None
    query = urlsplit(nxt).query
    params = dict(parse_qsl(query, keep_blank_values=True))
    return params or None
