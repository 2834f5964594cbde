"""Demo traffic for simulator mode (`serve --demo`): a message every few seconds, sent through
the same path as POST /api/messages, so a fresh install shows messages flowing on the dashboard.

Never runs with real Plivo credentials: it would send real SMS.
"""

from __future__ import annotations

import asyncio
import functools
import random
from datetime import UTC, datetime

import structlog

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
