"""Inbound message parsing, pure: the fields Plivo posts to the Application's `message_url`
(plivo-protocol.md §2.7) → InboundMessage, plus its dedupe key.

Every field is kept as received in the journal row's payload; this only reads what the product
shows and stores in columns. `From`, `To` and `MessageUUID` are required: a signed payload
without them cannot be a message, and is quarantined (`UnparseableCallback`), never dropped.
The text is kept exactly as received, spaces and all (never stripped): it is the message.
MMS media come as `Media<n>` (the docs number them from 1, a support article from 0) or
`MediaUrl<n>`, with `MediaContentType<n>`; both numberings are accepted, in number order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from plivo_tracker.messages.status import MessageStatus
from plivo_tracker.plivo.callback import UnparseableCallback

Fields = Mapping[str, Sequence[str]]

KIND = "inbound"  # journal.source and status_events.source of an inbound message
DEDUPE_PREFIX = "inbound:"
# Longest value stored per field (column sizes): longer is not a message we understand.
MAX_LENGTHS = {
    "MessageUUID": 64,
    "To": 64,
    "From": 64,
    "Type": 8,
    "TotalRate": 32,
    "TotalAmount": 32,
    "PowerpackUUID": 64,
    "MessageIntent": 32,
}
MAX_MEDIA = 50  # media items read from one message (Plivo allows 10 per MMS)
_MEDIA_URL = re.compile(r"(?:Media|MediaUrl)(\d{1,3})", re.ASCII)
_MEDIA_TYPE = re.compile(r"MediaContentType(\d{1,3})", re.ASCII)
_SURROGATE = re.compile("[\ud800-\udfff]")
_NUMBER = re.compile(r"\+?([0-9]{7,15})", re.ASCII)


@dataclass(frozen=True, slots=True)
class Media:
    url: str
    content_type: str | None


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One message sent to one of our numbers, as Plivo delivered it."""

    message_uuid: str
    from_number: str  # the remote sender: E.164 with "+" when it is a number
    to_number: str  # our number, the same way
    text: str | None  # `Text` (SMS, joined by Plivo when multipart) or `Body` (MMS)
    type: str  # "sms" | "mms" (or what Plivo said, lower case)
    units: int | None
    total_rate: str | None
    total_amount: str | None
    powerpack_uuid: str | None
    message_intent: str | None  # Plivo's keyword detection: optout | optin | help
    media: tuple[Media, ...]
    media_count: int | None

    # What the journal needs of a report (inbound/journal.py), like CallbackEvent.
    @property
    def dedupe_key(self) -> str:
        return DEDUPE_PREFIX + self.message_uuid

    @property
    def message_key(self) -> str:
        return self.message_uuid

    @property
    def status(self) -> MessageStatus:
        return MessageStatus.RECEIVED

    @property
    def media_urls(self) -> list[str]:
        return [m.url for m in self.media]

    def extras(self) -> dict[str, object]:
        """Plivo's fields that have no column of their own (the message JSON's `inbound`)."""
        return {
            "powerpack_uuid": self.powerpack_uuid,
            "message_intent": self.message_intent,
            "media_count": self.media_count,
            "media": [{"url": m.url, "content_type": m.content_type} for m in self.media],
        }


def remote_number(raw: str) -> str:
    """Plivo writes numbers as digits with the country code and no "+": those become E.164
    (the form our own sends store, so a reply and our message name one number). Short codes
    and sender ids stay as they are."""
    match = _NUMBER.fullmatch(raw)
    return "+" + match.group(1) if match else raw


def _int(value: str | None) -> int | None:
    if value is None or not (value.isascii() and value.isdigit()) or len(value) > 9:
        return None
    return int(value)


def _storable(key: str, value: str) -> None:
    # No text column takes NUL (PostgreSQL), and a lone surrogate cannot be encoded as UTF-8.
    if "\x00" in value or (not value.isascii() and _SURROGATE.search(value)):
        raise UnparseableCallback(f"{key[:32]!r} holds NUL or a lone surrogate")


def _media(first: Mapping[str, str]) -> tuple[Media, ...]:
    urls: dict[int, str] = {}
    types: dict[int, str] = {}
    for key, value in first.items():
        if m := _MEDIA_URL.fullmatch(key):
            urls.setdefault(int(m.group(1)), value)
        elif m := _MEDIA_TYPE.fullmatch(key):
            types[int(m.group(1))] = value
    return tuple(Media(urls[n], types.get(n)) for n in sorted(urls)[:MAX_MEDIA])


def parse_inbound(fields: Fields) -> InboundMessage:
    """Interpret an inbound message; raises UnparseableCallback when it cannot be one."""
    first: dict[str, str] = {}
    raw_text: dict[str, str] = {}
    for key, values in fields.items():
        if not key.isascii() and _SURROGATE.search(key):
            raise UnparseableCallback("a field name holds a lone surrogate")
        for value in values:
            if not value.isascii() and _SURROGATE.search(value):
                raise UnparseableCallback(f"{key[:32]!r} holds a lone surrogate")
        if not values:
            continue
        if key in ("Text", "Body"):
            _storable(key, values[0])
            raw_text[key] = values[0]  # the message itself: exactly as received
        elif stripped := values[0].strip():
            _storable(key, stripped)
            first[key] = stripped
    get = first.get
    missing = [name for name in ("MessageUUID", "From", "To") if name not in first]
    if missing:
        raise UnparseableCallback(f"{', '.join(missing)} missing")
    uuid, src, dst = first["MessageUUID"], first["From"], first["To"]
    for name, limit in MAX_LENGTHS.items():
        if len(get(name, "")) > limit:
            raise UnparseableCallback(f"{name} longer than {limit} characters")
    media = _media(first)
    text = raw_text.get("Text") or raw_text.get("Body")
    if text is None and ("Text" in raw_text or "Body" in raw_text):
        text = ""  # an empty message is still a message, and says so
    return InboundMessage(
        message_uuid=uuid,
        from_number=remote_number(src),
        to_number=remote_number(dst),
        text=text,
        type=get("Type", "").lower() or ("mms" if media else "sms"),
        units=_int(get("Units")),
        total_rate=get("TotalRate"),
        total_amount=get("TotalAmount"),
        powerpack_uuid=get("PowerpackUUID"),
        message_intent=get("MessageIntent"),
        media=media,
        media_count=_int(get("MediaCount")),
    )
