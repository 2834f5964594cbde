"""Response models for the read API (fields may be added, never renamed: PRODUCT.md)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from plivo_tracker.plivo.error_codes import describe


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
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None

    model_config = {"populate_by_name": True}

    def model_dump_public(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["from"] = data.pop("from_")
        return data


class Message(MessageSummary):
    parts: list[Part]
    events: list[Event]


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
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        sent_at=row["sent_at"],
        delivered_at=row["delivered_at"],
    )


def build_summary(row: dict[str, Any]) -> MessageSummary:
    return MessageSummary(**_summary_fields(row))


def build_message(
    row: dict[str, Any], parts: list[dict[str, Any]], events: list[dict[str, Any]]
) -> Message:
    return Message(
        **_summary_fields(row),
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
