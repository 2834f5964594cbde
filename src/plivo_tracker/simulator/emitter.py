"""Posts the simulator's status callbacks when due, genuinely signed (V2 + V3) like Plivo's.

Each accepted message gets a task that follows its scenario plan: it updates the MDR and calls
the message's `url` (form POST, or GET with the fields in the query for `method=GET`). A
receiver that answers non-2xx or does not answer within 8 s gets Plivo's retries: 60, 120 and
240 s later (§2.6), divided by the speed factor.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import structlog

from plivo_tracker.messages.status import RANK, MessageStatus
from plivo_tracker.plivo.signature import signed_headers
from plivo_tracker.simulator.scenario import PlannedCallback, ScenarioConfig, plan, units

log = structlog.get_logger(__name__)

PLIVO_RETRY_DELAYS = (60.0, 120.0, 240.0)
PLIVO_ANSWER_TIMEOUT = 8.0


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S.%f")


class Emitter:
    def __init__(
        self,
        auth_token: str,
        config: ScenarioConfig,
        *,
        seed: int | None = None,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._token = auth_token
        self.config = config
        self._rng = random.Random(seed)
        self._client = client or httpx.AsyncClient(timeout=PLIVO_ANSWER_TIMEOUT)
        self._own_client = client is None
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self.delivered: list[tuple[str, str, int]] = []  # (uuid, status, http status) per attempt

    def schedule(self, mdr: dict[str, Any]) -> None:
        """Start emitting callbacks for a just-accepted message (needs `_callback_url`)."""
        if not mdr.get("_callback_url"):
            return
        mdr["units"] = units(mdr.get("_text"))
        steps = plan(self.config, random.Random(self._rng.getrandbits(64)))
        task = asyncio.create_task(self._run(mdr, steps))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def idle(self) -> None:
        """Wait until every scheduled callback has been delivered or given up (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._own_client:
            await self._client.aclose()

    async def _run(self, mdr: dict[str, Any], steps: list[PlannedCallback]) -> None:
        started = self._clock()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        sends = []
        for step in steps:
            await asyncio.sleep(max(0.0, t0 + step.at - loop.time()))
            self._advance(mdr, step)
            fields = self._fields(mdr, step, started)
            # Each callback is delivered (and retried) on its own, as Plivo does.
            sends.append(asyncio.create_task(self._deliver(mdr, step, fields)))
        await asyncio.gather(*sends)

    @staticmethod
    def _advance(mdr: dict[str, Any], step: PlannedCallback) -> None:
        current = MessageStatus(mdr["message_state"])
        if RANK[MessageStatus(step.status)] > RANK[current]:
            mdr["message_state"] = step.status
            mdr["error_code"] = step.error_code or ("000" if step.status == "delivered" else None)

    def _fields(
        self, mdr: dict[str, Any], step: PlannedCallback, started: datetime
    ) -> dict[str, str]:
        when = started + timedelta(seconds=step.at)
        fields = {
            "MessageUUID": mdr["message_uuid"],
            "To": mdr["to_number"],
            "From": mdr["from_number"],
            "Type": mdr["message_type"],
            "Status": step.status,
            "ErrorCode": step.error_code or "",
            "Units": str(mdr["units"]),
            "TotalRate": mdr["total_rate"],
            "TotalAmount": f"{float(mdr['total_rate']) * mdr['units']:.5f}",
            "MCC": mdr["mcc"],
            "MNC": mdr["mnc"],
            "ParentMessageUUID": mdr["message_uuid"],
            "PartInfo": "reserved",
            "PowerpackUUID": "",
            "Sequence": str(step.sequence),
            "MessageTime": _stamp(started),
            "QueuedTime": _stamp(started),
        }
        if step.status != "queued":
            fields["SentTime"] = _stamp(when)
        if step.status in ("delivered", "undelivered"):
            fields["DeliveryReportTime"] = _stamp(when)
        return fields

    async def _deliver(
        self, mdr: dict[str, Any], step: PlannedCallback, fields: dict[str, str]
    ) -> None:
        url: str = mdr["_callback_url"]
        method = str(mdr.get("_callback_method") or "POST").upper()
        for attempt, delay in enumerate((0.0, *PLIVO_RETRY_DELAYS)):
            if delay:
                await asyncio.sleep(delay / self.config.speed)
            status = await self._post_once(url, method, fields)
            self.delivered.append((mdr["message_uuid"], step.status, status))
            if 200 <= status < 300:
                return
            log.info("simulator.callback_retry", attempt=attempt + 1, http_status=status)

    async def _post_once(self, url: str, method: str, fields: dict[str, str]) -> int:
        nonce = "".join(secrets.choice("0123456789") for _ in range(20))
        try:
            if method == "GET":
                target = url + ("&" if "?" in url else "?") + urlencode(fields)
                headers = signed_headers("GET", target, None, self._token, nonce)
                resp = await self._client.get(target, headers=headers)
            else:
                form = {k: [v] for k, v in fields.items()}
                headers = signed_headers("POST", url, form, self._token, nonce)
                headers["Content-Type"] = "application/x-www-form-urlencoded"
                resp = await self._client.post(url, content=urlencode(fields), headers=headers)
        except httpx.HTTPError:
            return 0  # no answer (refused, or nothing within 8 s): retried like a non-2xx
        return resp.status_code
