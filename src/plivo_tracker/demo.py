"""Demo traffic for simulator mode (`serve --demo`): a message every few seconds, sent through
the same path as POST /api/messages, so a fresh install shows messages flowing on the dashboard.

This is the product's side of the demo (it writes to the outbox and wakes the dispatcher), so it
lives here and not in simulator/, which only plays Plivo. The composition root starts it.
Never runs with real Plivo credentials: it would send real SMS.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import structlog

from plivo_tracker.config import Settings
from plivo_tracker.db.engine import Writer
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


async def run_demo(writer: Writer, dispatcher: Dispatcher, src: str, interval: float) -> None:
    """Queue one demo message every `interval` seconds (with jitter) until cancelled."""
    rng = random.Random()
    while True:
        await asyncio.sleep(interval * rng.uniform(0.5, 1.5))
        text = rng.choice(TEXTS).format(code=rng.randint(100000, 999999), n=rng.randint(1, 12))
        request = SendRequest(to=rng.choice(RECIPIENTS), text=text, **{"from": src})
        try:
            valid = validate(request, src)
            await writer.run(
                functools.partial(submit, v=valid, now=datetime.now(UTC), idempotency=None)
            )
        except Exception as exc:  # noqa: BLE001 - demo traffic must never take the server down
            log.warning("demo.send_failed", error=repr(exc))
            continue
        dispatcher.wake()


@contextlib.asynccontextmanager
async def demo_traffic(
    settings: Settings,
    writer: Writer,
    dispatcher: Dispatcher | None,
    src: str | None,
) -> AsyncIterator[None]:
    """Run the demo for as long as the block runs, when DEMO_INTERVAL_SECONDS asks for it and
    this process is a simulator-mode server that dispatches (`dispatcher` None: it does not)."""
    if settings.demo_interval_seconds <= 0:
        yield
        return
    if not settings.simulator_mode or src is None or dispatcher is None:
        log.warning("demo.off", reason="demo traffic runs only in simulator mode, with dispatch")
        yield
        return
    log.info("demo.on", interval_seconds=settings.demo_interval_seconds)
    task = asyncio.create_task(run_demo(writer, dispatcher, src, settings.demo_interval_seconds))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
