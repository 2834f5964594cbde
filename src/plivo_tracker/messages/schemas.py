"""Response models for the read API (fields may be added, never renamed: PRODUCT.md)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from plivo_tracker.messages.status import TERMINAL, MessageStatus
from plivo_tracker.plivo.error_codes import describe

FINAL_STATUSES = frozenset(s.value for s in TERMINAL)
RECEIVED = MessageStatus.RECEIVED.value  # an inbound message: nothing more is expected of it


class Event(BaseModel):
    id: int
    status: str
    previous_status: str | None
    message_status: str | None = None  # the message's status after this event
    effect: str
    sequence: int | None
    error_code: str | None
    error_meaning: str | None
    message_uuid: str | None
    source: str
    signature_scheme: str | None
    plivo_time: datetime | None
    received_at: datetime
    raw: dict[str, Any]
    headers: dict[str, str]


class Part(BaseModel):
    part_uuid: str
    part_info: str | None
    part_index: int | None
    status: str
    error_code: str | None
    error_meaning: str | None
    updated_at: datetime


class Attempt(BaseModel):
    """One try to hand the message to Plivo, or one lookup of an ambiguous one."""

    attempt: int
    started_at: datetime
    finished_at: datetime
    outcome: str  # accepted | retry | ambiguous | paused | failed | not_found | reconciled | ...
    http_status: int | None
    detail: str | None
    api_id: str | None  # Plivo's request id: quote it to Plivo support


class MessageSummary(BaseModel):
    """A message without its parts and timeline (the rows of GET /api/messages)."""

    id: int
    message_uuid: str | None
    status: str
    error_code: str | None
    error_meaning: str | None
    error_class: str | None
    to: str | None
    from_: str | None
    type: str | None
    origin: str
    units: int | None
    total_rate: str | None
    total_amount: str | None
    mcc: str | None
    mnc: str | None
    has_conflict: bool
    attempt_of: int | None = None  # the message this one re-sends (RESEND_ERROR_CODES)
    text: str | None = None
    # STORE_MESSAGE_TEXT=false: when the text and media URLs were erased (`text` is then null
    # because it is not stored, not because there was none).
    content_erased_at: datetime | None = None
    direction: str = "outbound"  # "inbound": a message sent to one of our numbers
    media_urls: list[str] | None = None  # MMS media (ours as sent; an inbound one's as received)
    # An inbound message: Plivo's fields without a place above (powerpack_uuid,
    # message_intent, media_count, media: [{url, content_type}]); null for ours.
    inbound: dict[str, Any] | None = None
    # True for a final status, and for a message Plivo still calls `sent` long after it was
    # sent ("no_receipt"); `unknown` and everything still moving are not settled.
    settled: bool = False
    settled_reason: str | None = None
    error_detail: str | None = None  # our side's reason (a refused send, an unknown outcome)
    send_options: dict[str, Any] | None = None  # Plivo options the send asked for
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None

    model_config = {"populate_by_name": True}

    def model_dump_public(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["from"] = data.pop("from_")
        return data


class ChainLink(BaseModel):
    """One message of a resend chain (RESEND_ERROR_CODES): the original, then each resend."""

    id: int
    status: str
    error_code: str | None


class Message(MessageSummary):
    parts: list[Part]
    events: list[Event]
    attempts: list[Attempt] = []
    chain: list[ChainLink] = []


def _meaning(code: str | None) -> str | None:
    info = describe(code)
    return info.meaning if info else None


def _summary_fields(row: dict[str, Any]) -> dict[str, Any]:
    info = describe(row["error_code"])
    return dict(
        id=row["id"],
        message_uuid=row["message_uuid"],
        status=row["status"],
        error_code=row["error_code"],
        error_meaning=info.meaning if info else None,
        error_class=info.error_class if info else None,
        to=row["to_number"],
        from_=row["from_number"],
        type=row["type"],
        origin=row["origin"],
        units=row["units"],
        total_rate=row["total_rate"],
        total_amount=row["total_amount"],
        mcc=row["mcc"],
        mnc=row["mnc"],
        has_conflict=bool(row["has_conflict"]),
        attempt_of=row.get("attempt_of"),
        text=row.get("text"),
        content_erased_at=row.get("content_erased_at"),
        direction=row.get("direction") or "outbound",
        media_urls=json.loads(row["media_urls"]) if row.get("media_urls") else None,
        inbound=json.loads(row["inbound"]) if row.get("inbound") else None,
        settled=settled(row["status"], row.get("settled_reason")),
        settled_reason=settled_reason(row["status"], row.get("settled_reason")),
        error_detail=row.get("error_detail"),
        send_options=json.loads(row["send_options"]) if row.get("send_options") else None,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        sent_at=row["sent_at"],
        delivered_at=row["delivered_at"],
    )


def build_summary(row: dict[str, Any]) -> MessageSummary:
    return MessageSummary(**_summary_fields(row))


def settled(status: str, reason: str | None) -> bool:
    """Nothing more is expected: a final status, "sent, no receipt" (the sweeper), or an
    inbound message (received)."""
    return status in FINAL_STATUSES or status == RECEIVED or reason is not None


def settled_reason(status: str, reason: str | None) -> str | None:
    if status in FINAL_STATUSES:
        return "final"  # a late receipt after "no receipt" makes it final after all
    if status == RECEIVED:
        return "received"
    return reason


def build_message(
    row: dict[str, Any],
    parts: list[dict[str, Any]],
    events: list[dict[str, Any]],
    attempts: list[dict[str, Any]] | None = None,
    chain: list[dict[str, Any]] | None = None,
) -> Message:
    return Message(
        **_summary_fields(row),
        attempts=[Attempt(**a) for a in attempts or []],
        chain=[ChainLink(**c) for c in chain or []],
        parts=[
            Part(
                part_uuid=p["part_uuid"],
                part_info=p["part_info"],
                part_index=p["part_index"],
                status=p["status"],
                error_code=p["error_code"],
                error_meaning=_meaning(p["error_code"]),
                updated_at=p["updated_at"],
            )
            for p in parts
        ],
        events=[
            Event(
                id=e["id"],
                status=e["status"],
                previous_status=e["previous_status"],
                message_status=e.get("message_status"),
                effect=e["effect"],
                sequence=e["sequence"],
                error_code=e["error_code"],
                error_meaning=_meaning(e["error_code"]),
                message_uuid=e["message_uuid"],
                source=e["source"],
                signature_scheme=e["signature_scheme"],
                plivo_time=e["plivo_time"],
                received_at=e["received_at"],
                raw=json.loads(e["payload"]),
                headers=json.loads(e["headers"] or "{}"),
            )
            for e in events
        ],
    )
