"""A verified Plivo request as the acknowledgement path handles it, and what became of it.

Built by the Plivo endpoints (status callbacks and inbound messages; also by the spool replayer
and the sweeper), appended to the journal by the group committer (inbound/journal.py). The
item's `source` says how its fields are read: `parse_inbound` for an inbound message
(`source == "inbound"`), `parse_callback` for every status report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from plivo_tracker.plivo.callback import CallbackEvent, UnparseableCallback, parse_callback
from plivo_tracker.plivo.inbound import KIND as INBOUND
from plivo_tracker.plivo.inbound import InboundMessage, parse_inbound


class Outcome(StrEnum):
    STORED = "stored"  # a new report, appended to the journal (committed)
    DUPLICATE = "duplicate"  # same (MessageUUID, Status, Sequence) as a journaled report
    REPLAY = "replay"  # a nonce already committed: the same signed request again
    QUARANTINED = "quarantined"  # signed but unparseable: kept raw


@dataclass(frozen=True, slots=True)
class CallbackItem:
    """A verified request, ready to store. `event` is None when it could not be parsed: a
    status report (CallbackEvent) or, for source "inbound", a message (InboundMessage).

    `nonce` is the nonce of the scheme that verified (kept with the event); `nonces` is every
    nonce the request carried, `nonce` included: all are recorded, and any one seen before
    makes the request a replay.
    """

    received_at: datetime
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    fields: dict[str, list[str]]
    nonce: str | None
    scheme: str | None
    event: CallbackEvent | InboundMessage | None
    reason: str | None = None
    # "reconcile": the sweeper's Get Message, applied the same way; "inbound": a message to us
    source: str = "callback"
    nonces: tuple[str, ...] = ()


def make_item(
    *,
    received_at: datetime,
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
    fields: dict[str, list[str]] | None,
    nonce: str | None,
    scheme: str | None,
    reason: str | None = None,
    source: str = "callback",
    nonces: Sequence[str] = (),
) -> CallbackItem:
    """Build an item, parsing the fields; a payload that does not parse is kept for quarantine.

    `nonces`: every nonce of the request; `nonce` is added when missing from it."""
    all_nonces = tuple(nonces)
    if nonce is not None and nonce not in all_nonces:
        all_nonces = (nonce, *all_nonces)
    event: CallbackEvent | InboundMessage | None = None
    if fields is not None and reason is None:
        try:
            event = parse_inbound(fields) if source == INBOUND else parse_callback(fields)
        except UnparseableCallback as exc:
            reason = str(exc)
    return CallbackItem(
        received_at=received_at,
        method=method,
        path=path,
        query=query,
        headers=headers,
        body=body,
        fields=fields or {},
        nonce=nonce,
        scheme=scheme,
        event=event,
        reason=reason,
        source=source,
        nonces=all_nonces,
    )
