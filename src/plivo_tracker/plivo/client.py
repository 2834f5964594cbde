"""Async client for Plivo's Message API (plivo-protocol.md §1): send, get, list.

One JSON POST with Basic auth and two GETs; no retry loop here (the outbox is the one retry
layer). Every failure is raised as `SendError` with the retry policy's `Failure` kind, so the
caller never has to interpret HTTP: connection refused and 429 mean nothing was sent; a 5xx, a
timeout after the request left, or a success without the documented body are ambiguous (the
message may exist); 401/403/404/405 are about the account; 400 is about the message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, NoReturn
from urllib.parse import parse_qsl, urlsplit

import httpx

from plivo_tracker.outbound.retry import Failure

DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=3.0)


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


def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def _api_id(body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("api_id"), str):
        return str(body["api_id"])[:64]
    return None


def _error_text(resp: httpx.Response, body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])[:300]
    return resp.text[:300]


def _raise_for(resp: httpx.Response) -> NoReturn:
    body = _json(resp)
    raise SendError(
        classify_status(resp.status_code),
        _error_text(resp, body),
        status=resp.status_code,
        retry_after=_retry_after(resp.headers.get("retry-after"), datetime.now(UTC)),
        api_id=_api_id(body),
    )


class PlivoClient:
    def __init__(
        self,
        base_url: str,
        auth_id: str,
        auth_token: str,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.auth_id = auth_id
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            auth=(auth_id, auth_token),
            timeout=timeout,
            transport=transport,
            headers={"Accept": "application/json", "User-Agent": "plivo-tracker"},
            # httpcore checks every pooled connection on each request, so a small pool is
            # faster: measured 460 sends/s with 4 in flight, 210/s with 16 (docs/benchmarks.md).
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

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
        try:
            resp = await self._http.post(self._path(), json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise SendError(Failure.NOT_SENT, f"{type(exc).__name__}: {exc}") from exc
        except httpx.TransportError as exc:
            # Timeout or reset after the request may have reached Plivo: the message may exist.
            raise SendError(Failure.AMBIGUOUS, f"{type(exc).__name__}: {exc}") from exc
        if resp.status_code in (200, 201, 202):
            data = _json(resp)
            uuids = data.get("message_uuid") if isinstance(data, dict) else None
            if not isinstance(uuids, list) or not all(isinstance(u, str) and u for u in uuids):
                # A success status without the documented body: Plivo may have created it.
                raise SendError(
                    Failure.AMBIGUOUS,
                    f"{resp.status_code} without the documented JSON: {resp.text[:200]!r}",
                    status=resp.status_code,
                    api_id=_api_id(data),
                )
            if not uuids:
                raise SendError(
                    Failure.REJECTED,
                    "no valid destination",
                    status=resp.status_code,
                    api_id=_api_id(data),
                )
            invalid = data.get("invalid_number") or []
            return Accepted(list(uuids), _api_id(data), [str(n) for n in invalid])
        _raise_for(resp)

    async def _get(self, path: str, params: Mapping[str, str | int] | None = None) -> Any:
        """One authenticated GET; a 200 whose body is not a JSON object is an error too."""
        try:
            resp = await self._http.get(path, params=params)
        except httpx.TransportError as exc:
            raise SendError(Failure.NOT_SENT, f"{type(exc).__name__}: {exc}") from exc
        if resp.status_code != 200:
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
