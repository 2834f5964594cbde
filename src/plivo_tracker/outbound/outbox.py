"""POST /api/messages as a use case: validate, then write messages + outbox rows in ONE transaction.

Nothing here calls Plivo: the dispatcher sends later. An Idempotency-Key row is written in the
same transaction, so the same key and body always get the same answer and never a second send,
and the same key with another body is a conflict.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection

from plivo_tracker.messages import phone
from plivo_tracker.optouts import repository as optout_repo
from plivo_tracker.outbound import repository as out_repo
from plivo_tracker.plivo.encoding import MAX_UCS2_CHARS, text_info
from plivo_tracker.web.hygiene import CleanLine, CleanText

log = structlog.get_logger(__name__)

MAX_RECIPIENTS = 1000
# Text fields refuse NUL, control characters and lone surrogates (web/hygiene.py), and are
# bounded: a phone number is never longer than 64 characters, nor a media URL than 2048.
Number = Annotated[CleanLine, Field(max_length=64)]
MediaURL = Annotated[CleanLine, Field(max_length=2048)]
MediaId = Annotated[CleanLine, Field(min_length=1, max_length=64)]
DltField = Annotated[CleanLine, Field(min_length=1, max_length=64)]


class SendRequest(BaseModel):
    """Body of POST /api/messages."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    to: Number | list[Number] = Field(description="E.164 number or a list of them (max 1000)")
    text: CleanText | None = Field(default=None, max_length=1600)
    media_urls: list[MediaURL] | None = Field(default=None, max_length=10)
    type: Literal["sms", "mms"] = "sms"
    from_: CleanLine | None = Field(default=None, alias="from", max_length=64)
    # Plivo's send options (plivo-protocol.md §1.1), passed through as given.
    message_expiry: int | None = Field(
        default=None, ge=5, le=10_799, description="seconds the message may wait in Plivo's queue"
    )
    log: Literal["true", "false", "number_only", "content_only"] | None = Field(
        default=None, description="what Plivo keeps of the message (default: PLIVO_LOG)"
    )
    trackable: bool | None = Field(default=None, description="link-click tracking")
    media_ids: list[MediaId] | None = Field(
        default=None, max_length=10, description="MMS media already uploaded to Plivo"
    )
    dlt_entity_id: DltField | None = None
    dlt_template_id: DltField | None = None
    dlt_template_category: DltField | None = None
    transactional: bool = Field(
        default=False,
        description="a transactional message (a one-time code, an alert) that may reach "
        "recipients who opted out, when the operator enabled OPT_OUT_TRANSACTIONAL_EXEMPTION; "
        "otherwise they are refused like any send",
    )


OPTION_FIELDS = (
    "message_expiry",
    "log",
    "trackable",
    "media_ids",
    "dlt_entity_id",
    "dlt_template_id",
    "dlt_template_category",
)


@dataclass(frozen=True, slots=True)
class Problem:
    field: str
    message: str
    index: int | None = None
    value: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "message": self.message}
        if self.index is not None:
            out["index"] = self.index
        if self.value is not None:
            out["value"] = self.value
        return out


class InvalidRequest(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


class IdempotencyConflict(ValueError):
    """The Idempotency-Key was used before with a different body."""


class OptedOut(ValueError):
    """Recipients of the send have opted out (nothing was stored)."""

    def __init__(self, numbers: list[str]) -> None:
        super().__init__(f"opted out: {', '.join(numbers)}")
        self.numbers = numbers


def checks_opt_outs(transactional: bool, exemption_enabled: bool) -> bool:
    """Whether a send is refused for opted-out recipients: always, unless it says it is
    transactional AND the operator enabled OPT_OUT_TRANSACTIONAL_EXEMPTION. A client's word
    alone is not enough: whether a message may reach someone who said STOP is a compliance
    decision for whoever runs the account, not for every app that holds an API key."""
    return not (transactional and exemption_enabled)


@dataclass(frozen=True, slots=True)
class Validated:
    recipients: list[str]  # E.164, de-duplicated, in request order
    src: str
    text: str | None
    media_urls: list[str] | None
    type: str
    encoding: str | None
    segments: int | None
    options: dict[str, Any] = field(default_factory=dict)  # Plivo send options, as given
    transactional: bool = False  # the request asks for the opt-out exemption


def validate(req: SendRequest, default_src: str | None) -> Validated:
    """Every problem at once (each bad number named with its index), or the normalised request."""
    problems: list[Problem] = []
    raw = [req.to] if isinstance(req.to, str) else list(req.to)
    if not raw:
        problems.append(Problem("to", "at least one recipient is required"))
    if len(raw) > MAX_RECIPIENTS:
        problems.append(Problem("to", f"at most {MAX_RECIPIENTS} recipients"))
    recipients: list[str] = []
    for index, number in enumerate(raw[:MAX_RECIPIENTS]):
        try:
            e164 = phone.to_e164(number)
        except phone.InvalidNumber as exc:
            problems.append(Problem("to", f"invalid number: {exc}", index, number))
            continue
        if req.type == "mms" and not e164.startswith("+1"):
            problems.append(
                Problem("to", "MMS goes to US and Canadian numbers only", index, number)
            )
            continue
        if e164 not in recipients:
            recipients.append(e164)
    info = text_info(req.text) if req.text else None
    if req.type == "sms":
        if not req.text:
            problems.append(Problem("text", "text is required for sms"))
        if req.media_urls:
            problems.append(Problem("media_urls", "media_urls need type mms"))
    elif not req.media_urls and not req.media_ids and not req.text:
        problems.append(Problem("media_urls", "mms needs media_urls, media_ids or text"))
    if req.type == "sms" and req.media_ids:
        problems.append(Problem("media_ids", "media_ids need type mms"))
    for url in req.media_urls or []:
        if not url.startswith(("https://", "http://")):
            problems.append(
                Problem("media_urls", "media URLs must be absolute http(s) URLs", value=url)
            )
    if info is not None and info.encoding == "UCS-2" and len(req.text or "") > MAX_UCS2_CHARS:
        problems.append(Problem("text", f"Unicode text is limited to {MAX_UCS2_CHARS} characters"))
    src = req.from_ or default_src
    if not src:
        problems.append(Problem("from", "no sender: pass 'from' or set PLIVO_SRC"))
    if problems:
        raise InvalidRequest(problems)
    assert src is not None
    return Validated(
        recipients,
        src,
        req.text,
        req.media_urls,
        req.type,
        info.encoding if info else None,
        info.segments if info else None,
        {name: getattr(req, name) for name in OPTION_FIELDS if getattr(req, name) is not None},
        req.transactional,
    )


# What a message says: with STORE_MESSAGE_TEXT=false it stays out of the idempotency record too
# (a hash of a short text, such as a one-time code, is as good as the text to anyone who
# tries every code).
CONTENT_FIELDS = frozenset({"text", "media_urls"})


def request_hash(req: SendRequest, *, with_content: bool = True) -> str:
    """The fingerprint stored with an Idempotency-Key. `with_content=False` leaves the text
    and media URLs out: the same key with another text is then answered like a retry."""
    # `transactional` counts only when set: the fingerprints of earlier requests stay as they were.
    left_out: set[str] = set() if with_content else set(CONTENT_FIELDS)
    if not req.transactional:
        left_out.add("transactional")
    body = req.model_dump(by_alias=True, exclude=left_out)
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def submit(
    conn: Connection,
    v: Validated,
    now: datetime,
    idempotency: tuple[str, str] | None,
    *,
    opt_out_exemption: bool = False,
) -> dict[str, Any]:
    """Store the messages and their outbox rows; returns the 202 body (stored with the key).
    Their `accepted` events are the projector's to write (journaled by insert_outbound).

    Opted-out recipients refuse the whole request (OptedOut, nothing stored) unless it is
    transactional and `opt_out_exemption` (OPT_OUT_TRANSACTIONAL_EXEMPTION) allows it. The
    check reads the opt-outs in this transaction: an opt-out committed before it (a PUT
    answered, a STOP applied) refuses the send; a replayed Idempotency-Key gets its first
    answer (that request was accepted before)."""
    if idempotency is not None:
        key, digest = idempotency
        previous = out_repo.claim_idempotency_key(conn, key, digest, now)
        if previous is not None:
            stored_hash, stored = previous
            if stored_hash != digest:
                raise IdempotencyConflict(key)
            return stored
    refused = optout_repo.opted_out_among(conn, v.recipients)
    if refused and checks_opt_outs(v.transactional, opt_out_exemption):
        raise OptedOut([n for n in v.recipients if n in refused])
    if refused:
        log.info("send.opt_out_exemption", opted_out_recipients=len(refused))
    created = []
    for to in v.recipients:
        message_id = out_repo.insert_outbound(conn, v, to, now)
        created.append({"id": message_id, "to": to, "status": "accepted"})
    out_repo.notify_outbox(conn)
    response: dict[str, Any] = {"messages": created}  # the 202 body
    if v.segments is not None:
        response["text"] = {"encoding": v.encoding, "segments": v.segments}
    if idempotency is not None:
        out_repo.store_idempotent_response(conn, idempotency[0], response)
    return response
