"""Demo traffic for simulator mode (`serve --demo`): a message every few seconds, sent through
the same path as POST /api/messages, so a fresh install shows messages flowing on the dashboard.

This is the product's side of the demo (it writes to the outbox and wakes the dispatcher), so it
lives here and not in simulator/, which only plays Plivo. The composition root runs it under a
leader (one process of `serve --workers N`).
Never runs with real Plivo credentials: it would send real SMS.
"""

from __future__ import annotations

import functools
import random
from datetime import UTC, datetime

import structlog

from plivo_tracker.config import Settings
from plivo_tracker.db.engine import Writer
from plivo_tracker.loops import PeriodicLoop
from plivo_tracker.outbound.dispatcher import Dispatcher
from plivo_tracker.outbound.outbox import SendRequest, submit, validate

log = structlog.get_logger(__name__)

# Simulated recipients: fictional 555-01xx numbers; the scenario decides each one's fate.
RECIPIENTS = [f"+1415555{n:04d}" for n in range(101, 121)]
TEXTS = [
    "Your verification code is {code}",
    "Alert: disk usage on db-{n} above 90%",
    "Your order #{code} has shipped",
    "Reminder: appointment tomorrow at {n}:30",
    "Deploy {code} finished: all checks passed ✓",
]


class Demo(PeriodicLoop):
    """Queues one demo message about every `interval` seconds (with jitter) until `stop()`.
    With several processes it runs under a leader (composition.py), so the rate is the same
    whatever their number."""

    name = "demo"

    def __init__(self, writer: Writer, dispatcher: Dispatcher, src: str, interval: float) -> None:
        super().__init__(interval)
        self._writer = writer
        self._dispatcher = dispatcher
        self._src = src
        self._every = interval
        self._rng = random.Random()

    async def run_once(self) -> None:
        self.interval = self._every * self._rng.uniform(0.5, 1.5)
        rng = self._rng
        text = rng.choice(TEXTS).format(code=rng.randint(100000, 999999), n=rng.randint(1, 12))
        request = SendRequest(to=rng.choice(RECIPIENTS), text=text, **{"from": self._src})
        try:
            valid = validate(request, self._src)
            await self._writer.run(
                functools.partial(submit, v=valid, now=datetime.now(UTC), idempotency=None)
            )
        except Exception as exc:  # noqa: BLE001 - demo traffic must never take the server down
            log.warning("demo.send_failed", error=repr(exc))
            return
        self._dispatcher.wake()  # this process's; the submit also NOTIFYs the others


def demo_job(
    settings: Settings,
    writer: Writer,
    dispatcher: Dispatcher | None,
    src: str | None,
) -> Demo | None:
    """The demo when DEMO_INTERVAL_SECONDS asks for it and this process is a simulator-mode
    server that dispatches (`dispatcher` None: it does not); None otherwise."""
    if settings.demo_interval_seconds <= 0:
        return None
    if not settings.simulator_mode or src is None or dispatcher is None:
        log.warning("demo.off", reason="demo traffic runs only in simulator mode, with dispatch")
        return None
    log.info("demo.on", interval_seconds=settings.demo_interval_seconds)
    return Demo(writer, dispatcher, src, settings.demo_interval_seconds)
