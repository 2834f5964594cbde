"""Executes the scenario: moves each MDR through its states and posts genuinely signed callbacks.

Each accepted message gets one task per record (the message, or each part when the scenario
asks for per-part callbacks) that follows its plan: at each step it advances the MDR (state,
error code, sent/updated times, so Get/List Messages show the truth) and, unless the plan lost
this message's callbacks or the send had no `url`, calls the message's `url` (form POST, or
GET with the fields in the query for `method=GET`). A receiver that answers non-2xx or does not
answer within 8 s gets Plivo's retries: 60, 120 and 240 s later (§2.6), divided by the speed.

Inbound messages (simulator/inbound.py) go out the same way (`deliver_inbound`): signed, to the
Application's `message_url`, retried on the same schedule.

Signature headers follow `signature_mode` (§3.1): "both" = V2 + V3 (what the product expects),
"v2" or "v3" = one family only, "ma" = both plus Ma-V2/Ma-V3 signed with the main-account token.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import structlog

from plivo_tracker.plivo.signature import Fields, signed_headers
from plivo_tracker.simulator.scenario import PlannedCallback, ScenarioConfig, plan_message

log = structlog.get_logger(__name__)

PLIVO_RETRY_DELAYS = (60.0, 120.0, 240.0)
PLIVO_ANSWER_TIMEOUT = 8.0
SIGNATURE_MODES = ("both", "v2", "v3", "ma")
# How far along each MDR state is: Plivo never moves an MDR back (a late `sent` after
# `delivered` changes nothing). The simulator keeps Plivo's order itself, apart from the
# product's status machine (messages/status.py), which it exists to test.
_STATE_ORDER = {
    "queued": 0,
    "received": 0,
    "sent": 1,
    "delivered": 2,
    "undelivered": 2,
    "failed": 2,
    "rejected": 2,
    "read": 3,
}
_FAMILY_HEADERS = {
    "v2": ("X-Plivo-Signature-V2", "X-Plivo-Signature-V2-Nonce"),
    "v3": ("X-Plivo-Signature-V3", "X-Plivo-Signature-V3-Nonce"),
}


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S.%f")


def mdr_time(when: datetime) -> str:
    """An MDR timestamp: seconds precision with a UTC offset, as Plivo's API shows them."""
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S+00:00")


class Emitter:
    def __init__(
        self,
        auth_token: str,
        config: ScenarioConfig,
        *,
        seed: int | None = None,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        signature_mode: str = "both",
        main_token: str | None = None,
    ) -> None:
        if signature_mode not in SIGNATURE_MODES:
            raise ValueError(f"signature_mode must be one of {', '.join(SIGNATURE_MODES)}")
        if signature_mode == "ma" and not main_token:
            raise ValueError("signature_mode 'ma' needs a main_token")
        self._token = auth_token
        self._main_token = main_token
        self.signature_mode = signature_mode
        self.config = config
        self._rng = random.Random(seed)
        self.reply_rng = random.Random(self._rng.getrandbits(64) if seed is not None else None)
        self._client = client or httpx.AsyncClient(timeout=PLIVO_ANSWER_TIMEOUT)
        self._own_client = client is None
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self.delivered: list[tuple[str, str, int]] = []  # (uuid, status, http status) per attempt
        self.dropped: list[tuple[str, str]] = []  # (uuid, status) of callbacks lost on purpose
        # Called with a delivered message's MDR when its recipient writes back (the scenario's
        # reply_rate); SimulatedPlivo posts the reply to the message_url.
        self.on_reply: Callable[[dict[str, Any]], Awaitable[object]] | None = None

    def schedule(self, records: Sequence[dict[str, Any]]) -> None:
        """Start the lifecycle of a just-accepted message: `records` are its MDRs (one, or one
        per part, first part first). They all share one fate; each part has its own timing."""
        mdr = records[0]
        decided = plan_message(
            self.config,
            random.Random(self._rng.getrandbits(64)),
            str(mdr["to_number"]),
            parts=len(records),
        )
        started = self._clock()
        for record, steps in zip(records, decided.parts, strict=True):
            self._spawn(self._run(record, steps, started, decided.callbacks_lost))
        if decided.reply_after is not None and self.on_reply is not None:
            last = max(step.at for steps in decided.parts for step in steps)
            self._spawn(self._reply(mdr, last + decided.reply_after))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reply(self, mdr: dict[str, Any], after: float) -> None:
        await asyncio.sleep(after)
        assert self.on_reply is not None
        try:
            await self.on_reply(mdr)
        except Exception as exc:  # noqa: BLE001 - a lost reply must not end anything else
            log.warning("simulator.reply_failed", error=repr(exc))

    async def deliver_inbound(
        self, url: str, method: str, message_uuid: str, fields: dict[str, str]
    ) -> int:
        """Post an inbound message to the Application's `message_url`, signed; returns the
        first attempt's HTTP status (0: no answer). A non-2xx gets Plivo's retries later, in
        the background (`idle()` waits for them)."""
        method = method.upper()
        status = await self._post_once(url, method, fields)
        self.delivered.append((message_uuid, "received", status))
        if not 200 <= status < 300:
            self._spawn(self._retry_inbound(url, method, message_uuid, fields))
        return status

    async def _retry_inbound(
        self, url: str, method: str, message_uuid: str, fields: dict[str, str]
    ) -> None:
        for delay in PLIVO_RETRY_DELAYS:
            await asyncio.sleep(delay / self.config.speed)
            status = await self._post_once(url, method, fields)
            self.delivered.append((message_uuid, "received", status))
            if 200 <= status < 300:
                return

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

    async def _run(
        self,
        mdr: dict[str, Any],
        steps: Sequence[PlannedCallback],
        started: datetime,
        lost: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        sends = []
        for step in steps:
            await asyncio.sleep(max(0.0, t0 + step.at - loop.time()))
            when = started + timedelta(seconds=step.at)
            self._advance(mdr, step, when)
            if not mdr.get("_callback_url"):
                continue  # Plivo has nowhere to post; the MDR still moves
            if lost:
                self.dropped.append((mdr["message_uuid"], step.status))
                continue
            fields = self._fields(mdr, step, started)
            # Each callback is delivered (and retried) on its own, as Plivo does.
            sends.append(asyncio.create_task(self._deliver(mdr, step, fields)))
        await asyncio.gather(*sends)

    @staticmethod
    def _advance(mdr: dict[str, Any], step: PlannedCallback, when: datetime) -> None:
        """Move the MDR forward (never back: a late `sent` changes nothing, as at Plivo)."""
        if _STATE_ORDER[step.status] <= _STATE_ORDER[mdr["message_state"]]:
            return
        mdr["message_state"] = step.status
        mdr["error_code"] = step.error_code or ("000" if step.status == "delivered" else None)
        mdr["message_updated_time"] = mdr_time(when)
        if step.status != "failed" and mdr.get("message_sent_time") is None:
            mdr["message_sent_time"] = mdr_time(when)  # failed never left Plivo

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
            "TotalAmount": mdr["total_amount"],
            "MCC": mdr["mcc"],
            "MNC": mdr["mnc"],
            "ParentMessageUUID": mdr.get("_parent_uuid") or mdr["message_uuid"],
            "PartInfo": mdr.get("_part_info") or "reserved",
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

    def signed(self, method: str, url: str, form: Fields | None, nonce: str) -> dict[str, str]:
        """The signature headers of one callback in this emitter's `signature_mode`."""
        main = self._main_token if self.signature_mode == "ma" else None
        headers = signed_headers(method, url, form, self._token, nonce, main)
        if self.signature_mode in _FAMILY_HEADERS:
            keep = _FAMILY_HEADERS[self.signature_mode]
            headers = {k: v for k, v in headers.items() if k in keep}
        return headers

    async def _post_once(self, url: str, method: str, fields: dict[str, str]) -> int:
        nonce = "".join(secrets.choice("0123456789") for _ in range(20))
        try:
            if method == "GET":
                target = url + ("&" if "?" in url else "?") + urlencode(fields)
                headers = self.signed("GET", target, None, nonce)
                resp = await self._client.get(target, headers=headers)
            else:
                form = {k: [v] for k, v in fields.items()}
                headers = self.signed("POST", url, form, nonce)
                headers["Content-Type"] = "application/x-www-form-urlencoded"
                resp = await self._client.post(url, content=urlencode(fields), headers=headers)
        except httpx.HTTPError:
            return 0  # no answer (refused, or nothing within 8 s): retried like a non-2xx
        return resp.status_code
