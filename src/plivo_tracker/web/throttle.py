"""Request-rate limits through the `limits` library (sliding window counters).

Four limits, each counted per client address or API key (docs/security.md):

- `api`: requests to /api/* (and the protected operations endpoints), per key and per address;
- `ws_connect`: WebSocket connects, per address;
- `auth_failures`: requests with a missing or wrong API key, per address. Once exhausted, every
  request from that address is refused with 429 before its key is even looked at, so guessing
  keys costs a window per few dozen tries;
- `callback_failures`: callbacks whose signature does not verify, per address. It is counted
  only *after* verification failed, so a genuine Plivo callback is never limited, whoever else
  shares its address.

The storage is `RATE_LIMIT_STORAGE`: in memory for one process, Redis when several serve. If
the storage fails (Redis down), requests are let through and the failure is logged and counted:
an outage of the limiter must not become an outage of the service.
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Literal

import limits
import structlog
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from plivo_tracker import metrics
from plivo_tracker.config import Settings

log = structlog.get_logger(__name__)

Kind = Literal["api", "ws_connect", "auth_failures", "callback_failures"]
KEY_PREFIX = "plivo-tracker"


def key_identity(key: str) -> str:
    """What a key is counted as: a digest, so the storage (Redis) never holds a key."""
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:24]


def storage_uri(configured: str) -> str:
    """`memory://`, `redis://…` → the async storage of the same kind (pure)."""
    return configured if configured.startswith("async+") else "async+" + configured


class Throttle:
    """`hit` counts a request and says how long to wait when over the limit (None: go on)."""

    def __init__(self, settings: Settings) -> None:
        uri = storage_uri(settings.rate_limit_storage)
        options: dict[str, str | float | bool] = {}
        if not uri.startswith("async+memory"):
            options["key_prefix"] = KEY_PREFIX
        self._limiter = SlidingWindowCounterRateLimiter(storage_from_string(uri, **options))
        configured: dict[Kind, str] = {
            "api": settings.rate_limit_api,
            "ws_connect": settings.rate_limit_ws_connect,
            "auth_failures": settings.rate_limit_auth_failures,
            "callback_failures": settings.rate_limit_callback_failures,
        }
        self._limits = {
            kind: None if rate == "off" else limits.parse(rate) for kind, rate in configured.items()
        }
        self._storage_failing = False

    async def hit(self, kind: Kind, who: str) -> int | None:
        """Count one request of `who`; seconds to wait if that was over the limit, else None."""
        return await self._check(kind, who, count=True)

    async def blocked(self, kind: Kind, who: str) -> int | None:
        """Seconds to wait if `who` has used up `kind` already (counts nothing), else None."""
        return await self._check(kind, who, count=False)

    async def _check(self, kind: Kind, who: str, *, count: bool) -> int | None:
        item = self._limits[kind]
        if item is None:
            return None
        try:
            if count:
                allowed = await self._limiter.hit(item, kind, who)
            else:
                allowed = await self._limiter.test(item, kind, who)
            if allowed:
                self._storage_failing = False
                return None
            stats = await self._limiter.get_window_stats(item, kind, who)
        except Exception as exc:  # noqa: BLE001 - fail open: see the module docstring
            metrics.RATE_LIMIT_ERRORS.inc()
            if not self._storage_failing:
                log.error("ratelimit.storage_failed", error=repr(exc))
            self._storage_failing = True
            return None
        if count:
            metrics.RATE_LIMITED.labels(kind=kind).inc()
        return max(1, math.ceil(stats.reset_time - time.time()))
