"""Plivo's Message API, simulated: send (202 + message_uuid list), get and list MDRs, account.

Same paths, auth, bodies and error shapes as plivo-protocol.md §1, so `plivo/client.py` cannot
tell it from api.plivo.com. `Faults` produces every failure the sending side must survive, and
tests may change it while a run is going (mutate `state.faults` in process, or
`PUT /_simulator/faults` on a standalone simulator):

- before the message exists: `fail_first` sends answer `fail_status`;
- after it exists (the answer is bad, the message is real and its callbacks run):
  `fail_after_create` sends answer `fail_status`, `timeout_after_create` sends hang for
  `hang_seconds` first, `garbage_after_create` sends answer 202 with a non-JSON body;
- for the whole account: `unauthorized` (401 everywhere) and `not_found` (404 everywhere, as a
  wrong auth id or base URL gives);
- Plivo's rate limits: `api_per_5s` requests per rolling 5 s for every call, and
  `list_per_minute` List Messages requests per rolling minute (0 = unlimited), answered 429.

Control routes under `/_simulator/` (no Plivo auth; only this app serves them) read and change
the faults, read the counters, and deliver an inbound message on demand (`POST
/_simulator/inbound`: from, to, text, media → posted, signed, to the Application's
`message_url`; simulator/inbound.py). What happens to a message after it is queued (statuses,
signed callbacks) is the emitter's job (`simulator/emitter.py`); every message starts `queued`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import math
import operator
import re
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any, get_type_hints
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from plivo_tracker.simulator.emitter import Emitter, mdr_time
from plivo_tracker.simulator.inbound import IncomingTraffic, incoming_fields, pick_text
from plivo_tracker.simulator.scenario import units

_STRIP = re.compile(r"[\s/\-.+()]")
GARBAGE_BODY = "<html>oops</html>"
LIST_WINDOW = timedelta(hours=24)  # List Messages without a time filter (§1.6)
MAX_PAGE = 20


@dataclass
class Faults:
    """Chaos knobs, read on every request so they can change during a run.

    The four counters are budgets: each send they affect uses up one, so a counter always says
    how many sends are still to be affected (set it again to affect more). For one send they
    apply in this order, and a send uses at most one of them: `fail_first` (before the message
    is created), then, once it exists, `fail_after_create`, `timeout_after_create`,
    `garbage_after_create`. Sends refused earlier (404, 401, 429, 400) use up none.
    """

    fail_first: int = 0  # next N sends answer `fail_status`, no message created
    fail_status: int = 500  # 429 adds Retry-After: `retry_after`
    retry_after: int = 1
    latency: float = 0.0  # seconds before an accepted send answers (the message exists)
    fail_after_create: int = 0  # next N sends create the message, then answer `fail_status`
    timeout_after_create: int = 0  # next N sends create it, then answer after `hang_seconds`
    hang_seconds: float = 30.0
    garbage_after_create: int = 0  # next N sends create it, then answer 202 with a non-JSON body
    unauthorized: bool = False  # every API call answers 401
    not_found: bool = False  # every API call answers 404
    list_per_minute: int = 20  # List Messages requests per rolling minute; 0 = unlimited
    api_per_5s: int = 300  # API requests (all kinds) per rolling 5 s; 0 = unlimited

    def __post_init__(self) -> None:
        hints = get_type_hints(Faults)
        for f in fields(self):
            _check_fault(f.name, hints[f.name], getattr(self, f.name))
        if not 400 <= self.fail_status <= 599:
            raise ValueError("fail_status must be an HTTP error status (400-599)")


def _check_fault(name: str, kind: type, value: object) -> None:
    """Refuse a value of the wrong JSON type (a bool is not a number) or out of range."""
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return
    numeric = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, numeric):
        raise ValueError(f"{name} must be {'an integer' if kind is int else 'a number'}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0")


class RollingWindow:
    """Admits at most `limit` requests in any `window` seconds (limit 0: unlimited).

    Refused requests are not recorded, so a client that backs off gets through again as soon
    as the oldest admitted request leaves the window.
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self._times: deque[float] = deque()

    def admit(self, limit: int, now: float) -> bool:
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()
        if limit and len(self._times) >= limit:
            return False
        self._times.append(now)
        return True


@dataclass
class SimulatedPlivo:
    """The simulator's state: one account, its MDRs, its faults, and counters tests can read.

    `clock` (monotonic seconds) drives the rate limits and `now` (UTC) the MDR times and the
    24 h List window; tests inject their own to stay fast and deterministic.
    """

    auth_id: str
    auth_token: str
    faults: Faults = field(default_factory=Faults)
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    send_requests: int = 0  # every POST that reached the send handler, failed ones included
    accepted: int = 0  # messages created (parts of one message count once)
    emitter: Emitter | None = None  # runs the lifecycles and callbacks; None: messages stay queued
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    by_destination: dict[str, int] = field(default_factory=dict)  # digits → messages created
    list_requests: int = 0
    get_requests: int = 0
    account_requests: int = 0
    rate_limited: int = 0  # 429s from the two rate limits (not from `fail_status`)
    # The account's numbers (digits): where inbound messages go unless a request names one.
    numbers: tuple[str, ...] = ("14155550100",)
    # The Application's message_url and message_method: where inbound messages are posted
    # (None: nowhere; they are still recorded, as Plivo keeps their MDRs).
    message_url: str | None = None
    message_method: str = "POST"
    inbound: int = 0  # inbound messages created
    traffic: IncomingTraffic | None = None  # a stream of inbound messages (standalone: lifespan)
    _api_window: RollingWindow = field(
        default_factory=lambda: RollingWindow(5.0), init=False, repr=False
    )
    _list_window: RollingWindow = field(
        default_factory=lambda: RollingWindow(60.0), init=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.emitter is not None:
            self.emitter.on_reply = self._reply

    async def _reply(self, mdr: dict[str, Any]) -> None:
        """A recipient writes back to the number a delivered message came from."""
        src, dst = str(mdr["to_number"]), str(mdr["from_number"])
        if _normalise(dst) is None:
            return  # a sender id or a powerpack: nothing to reply to
        assert self.emitter is not None
        await self.receive(src, dst, pick_text(self.emitter.reply_rng), ())

    async def receive(
        self, src: str, dst: str, text: str | None, media: Sequence[str] = ()
    ) -> tuple[dict[str, Any], int | None]:
        """A message from `src` to our number `dst`: recorded as an inbound MDR and posted,
        signed, to `message_url`. Returns the MDR and the first attempt's HTTP status (None:
        no message_url, or no emitter to post it)."""
        now = self.now().astimezone(UTC).replace(microsecond=0)
        message_uuid = str(uuid.uuid4())
        parts = 1 if media else units(text)
        mdr: dict[str, Any] = {
            "message_uuid": message_uuid,
            "message_direction": "inbound",
            "message_type": "mms" if media else "sms",
            "message_state": "received",
            "from_number": src,
            "to_number": dst,
            "message_time": mdr_time(now),
            "message_sent_time": None,
            "message_updated_time": mdr_time(now),
            "error_code": None,
            "error_message": "",
            "units": parts,
            "total_rate": "0.00000",
            "total_amount": "0.00000",
            "mcc": None,
            "mnc": None,
            "resource_uri": f"/v1/Account/{self.auth_id}/Message/{message_uuid}/",
            "_time": now,
            "_text": text,
        }
        self.messages[message_uuid] = mdr
        self.inbound += 1
        if self.message_url is None or self.emitter is None:
            return mdr, None
        fields = incoming_fields(message_uuid, src, dst, text, media, parts)
        status = await self.emitter.deliver_inbound(
            self.message_url, self.message_method, message_uuid, fields
        )
        # Inbound MDRs: `delivered` once our message_url answered 2xx (§2.3).
        mdr["message_state"] = "delivered" if 200 <= status < 300 else "undelivered"
        return mdr, status

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

    def gate(self, kind: str, authorization: str | None, auth_id: str) -> JSONResponse | None:
        """The checks every API call passes, in order: the 5 s rate limit, `not_found`,
        credentials (and `unauthorized`), then the List limit for kind "list". None = go on."""
        now = self.clock()
        if not self._api_window.admit(self.faults.api_per_5s, now):
            self.rate_limited += 1
            return _error(429, "too many requests")
        if self.faults.not_found:
            return _error(404, "not found")
        if self.faults.unauthorized or not self.authorised(authorization, auth_id):
            return _error(401, "Authentication credentials invalid")
        if kind == "list" and not self._list_window.admit(self.faults.list_per_minute, now):
            self.rate_limited += 1
            return _error(429, "too many requests")
        return None

    def take(self, budget: str) -> bool:
        """Use up one send of a fault budget (`Faults.fail_first`, ...); False when empty."""
        left: int = getattr(self.faults, budget)
        if left <= 0:
            return False
        setattr(self.faults, budget, left - 1)
        return True

    def create(self, src: str, dst: str, body: dict[str, Any], now: datetime) -> dict[str, Any]:
        """Store a new message (and its part records) and start its lifecycle."""
        text = body.get("text")
        parts = 1 if body.get("type") == "mms" else units(text if isinstance(text, str) else None)
        mdr = self._mdr(src, dst, body, now, parts)
        records = [mdr]
        if self.emitter is not None and self.emitter.config.per_part_callbacks and parts > 1:
            records = self._split(mdr, parts)
        for record in records:
            self.messages[record["message_uuid"]] = record
        self.accepted += 1
        self.by_destination[dst] = self.by_destination.get(dst, 0) + 1
        if self.emitter is not None:
            self.emitter.schedule(records)
        return mdr

    def _mdr(
        self, src: str, dst: str, body: dict[str, Any], now: datetime, parts: int
    ) -> dict[str, Any]:
        message_uuid = str(uuid.uuid4())
        created = now.astimezone(UTC).replace(microsecond=0)
        stamp = mdr_time(created)
        rate = "0.00500"
        return {
            "message_uuid": message_uuid,
            "message_direction": "outbound",
            "message_type": body.get("type", "sms"),
            "message_state": "queued",
            "from_number": src,
            "to_number": dst,
            "message_time": stamp,
            "message_sent_time": None,
            "message_updated_time": stamp,
            "error_code": None,
            "error_message": "",
            "units": parts,
            "total_rate": rate,
            "total_amount": f"{float(rate) * parts:.5f}",
            "mcc": "310",
            "mnc": "004",
            "resource_uri": f"/v1/Account/{self.auth_id}/Message/{message_uuid}/",
            # Not part of an MDR: what the emitter and the List filters need.
            "_time": created,
            "_callback_url": body.get("url"),
            "_callback_method": body.get("method", "POST"),
            "_text": body.get("text"),
        }

    def _split(self, mdr: dict[str, Any], parts: int) -> list[dict[str, Any]]:
        """Old multipart behaviour (§2.4): one record per part, each billed as one unit; the
        first keeps the UUID the send returned and is every part's ParentMessageUUID."""
        records = []
        for k in range(1, parts + 1):
            part_uuid = mdr["message_uuid"] if k == 1 else str(uuid.uuid4())
            record = mdr if k == 1 else dict(mdr)
            record.update(
                message_uuid=part_uuid,
                units=1,
                total_amount=mdr["total_rate"],
                resource_uri=f"/v1/Account/{self.auth_id}/Message/{part_uuid}/",
                _parent_uuid=mdr["message_uuid"],
                _part_info=f"{k} of {parts}",
            )
            records.append(record)
        return records

    def stats(self) -> dict[str, Any]:
        """The counters, so a test can check "each message sent exactly once" at Plivo's end."""
        return {
            "send_requests": self.send_requests,
            "accepted": self.accepted,
            "by_destination": dict(self.by_destination),
            "list_requests": self.list_requests,
            "get_requests": self.get_requests,
            "account_requests": self.account_requests,
            "rate_limited": self.rate_limited,
            "inbound": self.inbound,
        }


def _error(status: int, text: str, **headers: str) -> JSONResponse:
    return JSONResponse(
        {"api_id": str(uuid.uuid4()), "error": text}, status_code=status, headers=headers
    )


def _fault_error(faults: Faults) -> JSONResponse:
    """The answer of a send hit by `fail_first` / `fail_after_create`."""
    status = faults.fail_status
    if status == 429:
        return _error(429, "too many requests", **{"Retry-After": str(faults.retry_after)})
    return _error(status, HTTPStatus(status).phrase.lower())


def _public(mdr: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mdr.items() if not k.startswith("_")}


def _normalise(number: str) -> str | None:
    digits = _STRIP.sub("", number)
    return digits if digits.isdigit() and 7 <= len(digits) <= 15 else None


# --- List Messages (§1.6) -----------------------------------------------------------------

_FILTER_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?", re.ASCII)
_TIME_FILTERS: dict[str, Callable[[datetime, datetime], bool]] = {
    "message_time": operator.eq,
    "message_time__gt": operator.gt,
    "message_time__gte": operator.ge,
    "message_time__lt": operator.lt,
    "message_time__lte": operator.le,
}
_EXACT_FILTERS = ("message_direction", "message_state", "message_type", "error_code")
_NUMBER_FILTERS = ("from_number", "to_number")


def parse_filter_time(value: str) -> datetime:
    """`YYYY-MM-DD HH:MM[:ss[.uuuuuu]]`, UTC, as a datetime; ValueError when malformed."""
    if not _FILTER_TIME.fullmatch(value):
        raise ValueError(f"{value!r} is not YYYY-MM-DD HH:MM[:ss[.uuuuuu]]")
    formats = {16: "%Y-%m-%d %H:%M", 19: "%Y-%m-%d %H:%M:%S"}
    parsed = datetime.strptime(value, formats.get(len(value), "%Y-%m-%d %H:%M:%S.%f"))
    return parsed.replace(tzinfo=UTC)


def _bounded(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}")
    return int(raw)


@dataclass(frozen=True, slots=True)
class ListQuery:
    """A parsed List Messages query: the predicates an MDR must pass, and the page."""

    limit: int
    offset: int
    exact: tuple[tuple[str, str], ...]
    times: tuple[tuple[Callable[[datetime, datetime], bool], datetime], ...]

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> ListQuery:
        exact = [(name, params[name]) for name in _EXACT_FILTERS if name in params]
        exact += [(name, params[name].lstrip("+")) for name in _NUMBER_FILTERS if name in params]
        times = [
            (op, parse_filter_time(params[n])) for n, op in _TIME_FILTERS.items() if n in params
        ]
        return cls(
            limit=_bounded(params, "limit", MAX_PAGE, 1, MAX_PAGE),
            offset=_bounded(params, "offset", 0, 0, 10**9),
            exact=tuple(exact),
            times=tuple(times),
        )

    def matches(self, mdr: Mapping[str, Any], now: datetime) -> bool:
        for name, wanted in self.exact:
            value = mdr.get(name)
            if value is None or str(value).lstrip("+") != wanted:
                return False
        created: datetime = mdr["_time"]
        if not self.times:
            return created >= now - LIST_WINDOW  # no time filter: the last 24 h only
        return all(op(created, bound) for op, bound in self.times)


def _page_link(path: str, params: Sequence[tuple[str, str]], limit: int, offset: int) -> str:
    """`meta.next`/`previous`: the same query (every filter kept) at another offset."""
    rest = [(k, v) for k, v in params if k not in ("limit", "offset")]
    return path + "?" + urlencode([("limit", str(limit)), ("offset", str(offset)), *rest])


def list_page(
    state: SimulatedPlivo, path: str, params: Sequence[tuple[str, str]]
) -> dict[str, Any]:
    """One page of List Messages, newest first; ValueError for a bad filter or page."""
    query = ListQuery.parse(dict(params))
    now = state.now()
    newest_first = sorted(reversed(state.messages.values()), key=lambda m: m["_time"], reverse=True)
    rows = [m for m in newest_first if query.matches(m, now)]
    limit, offset = query.limit, query.offset
    has_next = offset + limit < len(rows)
    meta = {
        "limit": limit,
        "offset": offset,
        "total_count": len(rows),
        "next": _page_link(path, params, limit, offset + limit) if has_next else None,
        "previous": _page_link(path, params, limit, max(0, offset - limit)) if offset else None,
    }
    objects = [_public(m) for m in rows[offset : offset + limit]]
    return {"api_id": str(uuid.uuid4()), "meta": meta, "objects": objects}


# --- The app ------------------------------------------------------------------------------


async def _answer_send(state: SimulatedPlivo) -> Response | None:
    """The answer of a send whose message already exists: bad while a budget of
    `fail_after_create`, `timeout_after_create`, `garbage_after_create` lasts (in that order);
    None = the 202 as built."""
    if state.take("fail_after_create"):
        return _fault_error(state.faults)
    if state.take("timeout_after_create"):
        await asyncio.sleep(state.faults.hang_seconds)  # the client gave up long ago
    elif state.take("garbage_after_create"):
        return Response(GARBAGE_BODY, status_code=202, media_type="text/html")
    elif state.faults.latency:
        # Slow answer AFTER the message exists: a client timing out now cannot know.
        await asyncio.sleep(state.faults.latency)
    return None


def _accepted_body(uuids: list[str], invalid: list[str]) -> bytes:
    """The 202 body (§1.2). Built from bytes in the usual case (one message, nothing invalid):
    the same JSON a serializer would write, without one."""
    api_id = str(uuid.uuid4())
    if not invalid:
        quoted = ",".join(f'"{u}"' for u in uuids)  # UUIDs: nothing to escape
        return (
            f'{{"api_id":"{api_id}","message":"message(s) queued","message_uuid":[{quoted}]}}'
        ).encode()
    answer = {
        "api_id": api_id,
        "message": "message(s) queued",
        "message_uuid": uuids,
        "invalid_number": invalid,
    }
    return json.dumps(answer, separators=(",", ":")).encode()


def _validate_send(body: Any) -> tuple[str, list[str], list[str]] | JSONResponse:
    """(sender, valid destinations, invalid ones) of a send body, or the 400 to answer."""
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
    return str(src or f"powerpack:{pool}"), valid, invalid


def _add_control_routes(app: FastAPI, state: SimulatedPlivo) -> None:
    """`/_simulator/faults` (GET, PUT) and `/_simulator/stats`: for tests, no Plivo auth."""

    @app.get("/_simulator/faults")
    async def get_faults() -> JSONResponse:
        return JSONResponse(asdict(state.faults))

    @app.put("/_simulator/faults")
    async def put_faults(request: Request) -> JSONResponse:
        try:
            changes = await request.json()
        except ValueError:
            return JSONResponse({"error": "body is not JSON"}, status_code=400)
        if not isinstance(changes, dict):
            return JSONResponse({"error": "body is not a JSON object"}, status_code=422)
        unknown = sorted(set(changes) - {f.name for f in fields(Faults)})
        if unknown:
            return JSONResponse({"error": f"unknown fields: {unknown}"}, status_code=422)
        try:
            replace(state.faults, **changes)  # validates the result as a whole
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        for name, value in changes.items():  # same object: in-process holders see the change
            setattr(state.faults, name, value)
        return JSONResponse(asdict(state.faults))

    @app.get("/_simulator/stats")
    async def get_stats() -> JSONResponse:
        return JSONResponse(state.stats())

    @app.post("/_simulator/inbound")
    async def post_inbound(request: Request) -> JSONResponse:
        """An inbound message now: {"from", "to"?, "text"?, "media"?: [url, ...]}; answers
        the MessageUUID and what the message_url answered (null: none configured)."""
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "body is not JSON"}, status_code=400)
        checked = _inbound_request(body, state.numbers)
        if isinstance(checked, str):
            return JSONResponse({"error": checked}, status_code=422)
        src, dst, text, media = checked
        mdr, status = await state.receive(src, dst, text, media)
        return JSONResponse(
            {
                "message_uuid": mdr["message_uuid"],
                "from": src,
                "to": dst,
                "message_url": state.message_url,
                "http_status": status,
            }
        )


def _inbound_request(
    body: Any, numbers: Sequence[str]
) -> tuple[str, str, str | None, list[str]] | str:
    """(from, to, text, media) of a POST /_simulator/inbound body, or why it is refused."""
    if not isinstance(body, dict):
        return "body is not a JSON object"
    unknown = sorted(set(body) - {"from", "to", "text", "media"})
    if unknown:
        return f"unknown fields: {unknown}"
    src = _normalise(body["from"]) if isinstance(body.get("from"), str) else None
    if src is None:
        return "from must be a phone number (7-15 digits)"
    raw_to = body.get("to", numbers[0] if numbers else None)
    dst = _normalise(raw_to) if isinstance(raw_to, str) else None
    if dst is None:
        return "to must be a phone number (7-15 digits)"
    text = body.get("text")
    if text is not None and not isinstance(text, str):
        return "text must be a string"
    media = body.get("media") or []
    if not isinstance(media, list) or not all(
        isinstance(u, str) and u.startswith(("http://", "https://")) for u in media
    ):
        return "media must be a list of http(s) URLs"
    if text is None and not media:
        return "a message needs a text or media"
    return src, dst, text, media


def create_simulator_app(state: SimulatedPlivo) -> SimulatorApp:
    """The simulator's ASGI app: Send Message answered by `SimulatorApp` itself, every other
    route (Get, List, Account, `/_simulator/`) by a FastAPI app behind it."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Served on its own (`plivo-tracker simulate`): the inbound stream runs with the app.
        # In process, the product's server runs it (under a leader).
        task = asyncio.create_task(state.traffic.run()) if state.traffic is not None else None
        try:
            yield
        finally:
            if task is not None and state.traffic is not None:
                state.traffic.stop()
                await task

    app = FastAPI(title="plivo-tracker simulator", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.sim = state
    _add_control_routes(app, state)

    @app.get("/v1/Account/{auth_id}/")
    async def get_account(auth_id: str, request: Request) -> JSONResponse:
        state.account_requests += 1
        refused = state.gate("account", request.headers.get("authorization"), auth_id)
        if refused is not None:
            return refused
        return JSONResponse(
            {
                "api_id": str(uuid.uuid4()),
                "account_type": "standard",
                "auth_id": state.auth_id,
                "cash_credits": "10.00000",
                "name": "Simulated account",
                "resource_uri": f"/v1/Account/{state.auth_id}/",
            }
        )

    @app.get("/v1/Account/{auth_id}/Message/{message_uuid}/")
    async def get_message(auth_id: str, message_uuid: str, request: Request) -> JSONResponse:
        state.get_requests += 1
        refused = state.gate("get", request.headers.get("authorization"), auth_id)
        if refused is not None:
            return refused
        mdr = state.messages.get(message_uuid)
        if mdr is None:
            return _error(404, "not found")
        return JSONResponse({"api_id": str(uuid.uuid4()), **_public(mdr)})

    @app.get("/v1/Account/{auth_id}/Message/")
    async def list_messages(auth_id: str, request: Request) -> JSONResponse:
        state.list_requests += 1
        refused = state.gate("list", request.headers.get("authorization"), auth_id)
        if refused is not None:
            return refused
        path = f"/v1/Account/{state.auth_id}/Message/"
        try:
            page = list_page(state, path, request.query_params.multi_items())
        except ValueError as exc:
            return _error(400, str(exc))
        return JSONResponse(page)

    return SimulatorApp(state, app)


# --- Send Message (§1.1): plain ASGI in front of FastAPI ---------------------------------------

_SEND_PREFIX = "/v1/Account/"
_SEND_SUFFIX = "/Message/"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


_NOT_JSON = object()


class _Disconnected(Exception):
    """The client went away before its body arrived: nothing to answer."""


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _authorization(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return str(value.decode("latin-1"))
    return None


class SimulatorApp:
    """ASGI: `POST /v1/Account/{auth_id}/Message/` is answered here, without a framework (no
    routing, no request object, no response model: the body parsed once with `json.loads`, the
    202 written from bytes), because it is what load tests hammer; everything else goes to the
    FastAPI app `app` (whose `state.sim` is the simulator, also reachable as `self.state.sim`).
    """

    def __init__(self, sim: SimulatedPlivo, app: FastAPI) -> None:
        self.sim = sim
        self.app = app

    @property
    def state(self) -> Any:
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path.startswith(_SEND_PREFIX) and path.endswith(_SEND_SUFFIX):
                auth_id = path[len(_SEND_PREFIX) : -len(_SEND_SUFFIX)]
                if auth_id and "/" not in auth_id:
                    try:
                        await self._send_message(scope, receive, send, auth_id)
                    except _Disconnected:
                        pass
                    return
        await self.app(scope, receive, send)

    async def _send_message(self, scope: Scope, receive: Receive, send: Send, auth_id: str) -> None:
        """The checks in Plivo's order: rate limit, account, credentials (`gate`), then
        `fail_first` (nothing created), the body; then the message exists and faults decide the
        answer."""
        state = self.sim
        state.send_requests += 1
        refused = state.gate("send", _authorization(scope), auth_id)
        if refused is None and state.take("fail_first"):
            refused = _fault_error(state.faults)
        if refused is not None:
            await refused(scope, receive, send)
            return
        try:
            body = json.loads(await _read_body(receive))
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested beyond reason
            body = _NOT_JSON
        checked = _error(400, "body is not JSON") if body is _NOT_JSON else _validate_send(body)
        if isinstance(checked, JSONResponse):
            await checked(scope, receive, send)
            return
        src, valid, invalid = checked
        now = state.now()
        uuids = [state.create(src, dst, body, now)["message_uuid"] for dst in valid]
        other = await _answer_send(state)
        if other is not None:
            await other(scope, receive, send)
            return
        content = _accepted_body(uuids, invalid)
        await send(
            {
                "type": "http.response.start",
                "status": 202,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(content)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})
