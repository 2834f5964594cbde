"""Plivo's Message API, simulated: send (202 + message_uuid list), get and list MDRs.

Same paths, auth, bodies and error shapes as plivo-protocol.md §1, so `plivo/client.py` cannot
tell it from api.plivo.com. Fault knobs make the first sends fail (500 or 429 with Retry-After)
or answer slowly. What happens to a message after it is queued (statuses, signed callbacks) is
the emitter's job (`simulator/emitter.py`); every accepted message starts `queued`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from plivo_tracker.simulator.emitter import Emitter

_STRIP = re.compile(r"[\s/\-.+()]")


@dataclass
class Faults:
    """Chaos knobs: the first `fail_first` sends answer `fail_status` (429 adds Retry-After);
    `latency` delays the answer of accepted sends (the message already exists)."""

    fail_first: int = 0
    fail_status: int = 500
    retry_after: int = 1
    latency: float = 0.0


@dataclass
class SimulatedPlivo:
    """The simulator's state: one account, its MDRs, and counters tests can read."""

    auth_id: str
    auth_token: str
    faults: Faults = field(default_factory=Faults)
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    send_requests: int = 0  # every POST that reached the send handler, failed ones included
    accepted: int = 0  # messages created
    emitter: Emitter | None = None  # posts the status callbacks; None: messages stay queued

    def authorised(self, header: str | None, auth_id: str) -> bool:
        if not header or not header.lower().startswith("basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        ok_user = hmac.compare_digest(user.encode(), self.auth_id.encode())
        ok_pass = hmac.compare_digest(password.encode(), self.auth_token.encode())
        return ok_user and ok_pass and auth_id == self.auth_id

    def create(self, src: str, dst: str, body: dict[str, Any], now: datetime) -> dict[str, Any]:
        mdr = {
            "message_uuid": str(uuid.uuid4()),
            "message_direction": "outbound",
            "message_type": body.get("type", "sms"),
            "message_state": "queued",
            "from_number": src,
            "to_number": dst,
            "message_time": now.strftime("%Y-%m-%d %H:%M:%S+00:00"),
            "error_code": None,
            "units": 1,
            "total_rate": "0.00500",
            "total_amount": "0.00500",
            "mcc": "310",
            "mnc": "004",
            "resource_uri": "",
            # Not part of an MDR: what the emitter needs to call back.
            "_callback_url": body.get("url"),
            "_callback_method": body.get("method", "POST"),
            "_text": body.get("text"),
        }
        mdr["resource_uri"] = f"/v1/Account/{self.auth_id}/Message/{mdr['message_uuid']}/"
        self.messages[mdr["message_uuid"]] = mdr
        self.accepted += 1
        if self.emitter is not None:
            self.emitter.schedule(mdr)
        return mdr


def _error(status: int, text: str, **headers: str) -> JSONResponse:
    return JSONResponse(
        {"api_id": str(uuid.uuid4()), "error": text}, status_code=status, headers=headers
    )


def _public(mdr: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mdr.items() if not k.startswith("_")}


def _normalise(number: str) -> str | None:
    digits = _STRIP.sub("", number)
    return digits if digits.isdigit() and 7 <= len(digits) <= 15 else None


def create_simulator_app(state: SimulatedPlivo) -> FastAPI:
    app = FastAPI(title="plivo-tracker simulator", docs_url=None, redoc_url=None)
    app.state.sim = state

    @app.post("/v1/Account/{auth_id}/Message/")
    async def send(auth_id: str, request: Request) -> JSONResponse:
        state.send_requests += 1
        if not state.authorised(request.headers.get("authorization"), auth_id):
            return _error(401, "Authentication credentials invalid")
        if state.send_requests <= state.faults.fail_first:
            if state.faults.fail_status == 429:
                return _error(
                    429, "too many requests", **{"Retry-After": str(state.faults.retry_after)}
                )
            return _error(state.faults.fail_status, "internal server error")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "body is not a JSON object")
        src, pool = body.get("src"), body.get("powerpack_uuid")
        if bool(src) == bool(pool):
            return _error(400, "exactly one of src and powerpack_uuid is required")
        if body.get("type", "sms") not in ("sms", "mms"):
            return _error(400, "type must be sms or mms")
        if not isinstance(body.get("dst"), str) or not body["dst"]:
            return _error(400, "dst is required")
        valid: list[str] = []
        invalid: list[str] = []
        for raw in body["dst"].split("<"):
            number = _normalise(raw)
            if number is None:
                invalid.append(raw)
            elif number not in valid:
                valid.append(number)
        if not valid:
            return _error(400, f"{body['dst']} is not a valid phone number")
        now = datetime.now(UTC)
        created = [state.create(src or f"powerpack:{pool}", dst, body, now) for dst in valid]
        answer: dict[str, Any] = {
            "api_id": str(uuid.uuid4()),
            "message": "message(s) queued",
            "message_uuid": [m["message_uuid"] for m in created],
        }
        if invalid:
            answer["invalid_number"] = invalid
        if state.faults.latency:
            # Slow answer AFTER the message exists: a client timing out now cannot know.
            await asyncio.sleep(state.faults.latency)
        return JSONResponse(answer, status_code=202)

    @app.get("/v1/Account/{auth_id}/Message/{message_uuid}/")
    async def get_message(auth_id: str, message_uuid: str, request: Request) -> JSONResponse:
        if not state.authorised(request.headers.get("authorization"), auth_id):
            return _error(401, "Authentication credentials invalid")
        mdr = state.messages.get(message_uuid)
        if mdr is None:
            return _error(404, "not found")
        return JSONResponse({"api_id": str(uuid.uuid4()), **_public(mdr)})

    @app.get("/v1/Account/{auth_id}/Message/")
    async def list_messages(auth_id: str, request: Request) -> JSONResponse:
        if not state.authorised(request.headers.get("authorization"), auth_id):
            return _error(401, "Authentication credentials invalid")
        q = request.query_params
        rows = [_public(m) for m in reversed(list(state.messages.values()))]  # newest first
        for name in ("to_number", "from_number", "message_state", "message_direction"):
            if name in q:
                wanted = q[name].lstrip("+")
                rows = [r for r in rows if str(r[name]).lstrip("+") == wanted]
        if "message_time__gte" in q:  # "YYYY-MM-DD HH:MM[:ss]", UTC
            since = q["message_time__gte"]
            rows = [r for r in rows if r["message_time"][: len(since)] >= since]
        limit = min(max(int(q.get("limit", 20)), 1), 20)
        offset = max(int(q.get("offset", 0)), 0)
        page = rows[offset : offset + limit]
        meta = {
            "limit": limit,
            "offset": offset,
            "total_count": len(rows),
            "next": None,
            "previous": None,
        }
        return JSONResponse({"api_id": str(uuid.uuid4()), "meta": meta, "objects": page})

    return app
