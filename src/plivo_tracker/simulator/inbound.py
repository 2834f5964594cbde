"""Messages sent *to* the account's numbers, simulated: what Plivo posts to the Application's
`message_url` (plivo-protocol.md §2.7), genuinely signed like every callback (the emitter's
signature mode), with Plivo's retries when the receiver does not answer 2xx.

Three sources: on demand (`POST /_simulator/inbound` with from/to/text/media, or
`SimulatedPlivo.receive` in process), replies of recipients to delivered messages (the
scenario's `reply_rate`), and `IncomingTraffic`, a stream at a configurable rate. The texts
include opt-out keywords (STOP, START, HELP in several spellings) and non-ASCII messages.
Nothing here knows the product: only Plivo's wire format.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Sequence

import structlog

log = structlog.get_logger(__name__)

# What people write back; keywords in the spellings people use (case, spaces), and text that
# is not ASCII (accents, emoji: 4-byte UTF-8, CJK).
TEXTS = (
    "Thanks!",
    "STOP",
    "stop",
    " Stop ",
    "UNSUBSCRIBE",
    "START",
    "unstop",
    "HELP",
    "help",
    "YES",
    "Can we move it to 3pm?",
    "Grüße 👋",
    "¿Puedes llamarme mañana? ☎",
    "好的，谢谢",
    "Merci beaucoup 🙏",
    "Ok 👍🏽",
)
# Plivo's own keyword detection (MessageIntent, long codes and toll-free): the exact words.
_INTENTS = {
    "STOP": "optout",
    "STOPALL": "optout",
    "UNSUBSCRIBE": "optout",
    "CANCEL": "optout",
    "END": "optout",
    "QUIT": "optout",
    "START": "optin",
    "UNSTOP": "optin",
    "YES": "optin",
    "HELP": "help",
    "INFO": "help",
}
_CONTENT_TYPES = {
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "mp4": "video/mp4",
    "pdf": "application/pdf",
}
SENDERS = tuple(f"1415555{n:04d}" for n in range(201, 221))  # fictional 555-02xx numbers
MEDIA_SAMPLES = (
    "https://media.example.com/sim/cat.jpg",
    "https://media.example.com/sim/receipt.pdf",
)


def pick_text(rng: random.Random) -> str:
    return rng.choice(TEXTS)


def intent(text: str | None) -> str:
    """Plivo's MessageIntent for `text` (empty when it is not a keyword)."""
    return _INTENTS.get((text or "").strip().upper(), "")


def content_type(url: str) -> str:
    """A media URL's content type, from its extension (what Plivo reports for stored media)."""
    ext = url.rsplit("?", 1)[0].rsplit(".", 1)[-1].lower()
    return _CONTENT_TYPES.get(ext, "application/octet-stream")


def incoming_fields(
    message_uuid: str,
    src: str,
    dst: str,
    text: str | None,
    media: Sequence[str] = (),
    units: int = 1,
) -> dict[str, str]:
    """The fields Plivo posts for a message from `src` to our number `dst` (§2.7): an SMS
    carries `Text`; an MMS (any media) `Body`, `MediaCount` and `Media<n>` /
    `MediaContentType<n>` numbered from 1, as the docs number them."""
    mms = bool(media)
    fields = {
        "From": src,
        "To": dst,
        "Type": "mms" if mms else "sms",
        "MessageUUID": message_uuid,
        "Units": str(units),
        "TotalRate": "0.00000",
        "TotalAmount": "0.00000",
        "PowerpackUUID": "",
        "MessageIntent": intent(text),
    }
    if mms:
        fields["Body"] = text or ""
        fields["MediaCount"] = str(len(media))
        for n, url in enumerate(media, start=1):
            fields[f"Media{n}"] = url
            fields[f"MediaContentType{n}"] = content_type(url)
    else:
        fields["Text"] = text or ""
    return fields


Receive = Callable[[str, str, str | None, Sequence[str]], Awaitable[object]]


class IncomingTraffic:
    """Messages from random senders to our numbers, `per_minute` on average (exponential
    gaps, seeded), until `stop()`; one in ten carries a picture. A job with `run()`/`stop()`,
    so a server runs it under a leader (one stream whatever the number of workers)."""

    def __init__(
        self,
        receive: Receive,
        numbers: Sequence[str],
        per_minute: float,
        *,
        seed: int | None = None,
    ) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be > 0")
        if not numbers:
            raise ValueError("at least one number of ours receives the traffic")
        self._receive = receive
        self._numbers = tuple(numbers)
        self.per_minute = per_minute
        self._rng = random.Random(seed)
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        try:
            while not self._stopping.is_set():
                gap = self._rng.expovariate(self.per_minute / 60.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), gap)
                if self._stopping.is_set():
                    break
                await self.once()
        finally:
            self._stopping.clear()  # restartable, like the other jobs

    async def once(self) -> None:
        rng = self._rng
        media = [rng.choice(MEDIA_SAMPLES)] if rng.random() < 0.1 else []
        try:
            await self._receive(
                rng.choice(SENDERS), rng.choice(self._numbers), pick_text(rng), media
            )
        except Exception as exc:  # noqa: BLE001 - a failed post must not end the stream
            log.warning("simulator.inbound_failed", error=repr(exc))
