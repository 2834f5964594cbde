"""API-key check for /api/* (Bearer or X-API-Key), constant-time; open when API_KEYS is empty."""

from __future__ import annotations

import hmac

from fastapi import Request
from starlette.datastructures import Headers

from plivo_tracker.web.errors import Unauthorized


def key_matches(given: str | None, keys: list[str]) -> bool:
    if given is None:
        return False
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(given.encode(), key.encode())
    return ok


def key_from_headers(headers: Headers) -> str | None:
    """The key a client sent: `X-API-Key: KEY` or `Authorization: Bearer KEY`."""
    given = headers.get("x-api-key")
    if given is None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token:
            given = token.strip()
    return given


def require_api_key(request: Request) -> None:
    keys: list[str] = request.app.state.ctx.settings.api_keys
    if not keys:
        return  # only allowed on loopback: `serve` refuses other hosts without keys
    if not key_matches(key_from_headers(request.headers), keys):
        raise Unauthorized("a valid API key is required (Authorization: Bearer KEY or X-API-Key)")
