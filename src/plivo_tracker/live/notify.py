"""Cross-process wake-ups with LISTEN/NOTIFY on PostgreSQL; nothing on SQLite.

One asyncpg connection per process listens on the channels given. A notification only says
"look again": what changed is always read from the database, so a lost notification (the
connection dropped) costs latency, never data — the readers also poll.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)
RETRY_SECONDS = 5.0  # between reconnection attempts


class Listener:
    """LISTEN on some channels and call a function (no arguments) for each notification."""

    def __init__(self, database_url: str, channels: dict[str, Callable[[], None]]) -> None:
        self._url = database_url
        self._channels = channels
        self._conn: object | None = None
        self._last_try = float("-inf")

    @property
    def enabled(self) -> bool:
        return self._url.startswith("postgresql")

    @property
    def connected(self) -> bool:
        conn = self._conn
        return conn is not None and not conn.is_closed()  # type: ignore[attr-defined]

    async def start(self) -> bool:
        """Connect and listen; False (logged) when PostgreSQL is not reachable right now."""
        if not self.enabled or self.connected:
            return self.connected
        now = time.monotonic()
        if now - self._last_try < RETRY_SECONDS:
            return False
        self._last_try = now
        import asyncpg

        dsn = "postgresql://" + self._url.split("://", 1)[1]
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
            for channel, wake in self._channels.items():
                await conn.add_listener(channel, lambda *_args, _wake=wake: _wake())
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("listen.failed", channels=sorted(self._channels), error=repr(exc))
            return False
        self._conn = conn
        # Whatever was notified while we were not listening: let every reader look once.
        for wake in self._channels.values():
            wake()
        return True

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()  # type: ignore[attr-defined]
