"""All SQL of opt-outs: the list, its history, keywords applied, the send check, the import.

Synchronous functions on the database writer (db/engine.py), each inside the caller's
transaction: the projector's for keywords (`apply_keyword`), the outbox submit's for the check
of a send (`opted_out_among`), a route's or a CLI command's for the rest.

Idempotent by construction: opting out a number that has opted out, or back in one that has
not, changes nothing and records nothing; a message causes at most one event (unique
`message_id`), so applying the same inbound message twice is harmless.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import Connection, delete, select

from plivo_tracker.db.dialect import insert_ignore
from plivo_tracker.messages import phone
from plivo_tracker.messages.projection import InboundHook
from plivo_tracker.optouts.keywords import Action, classify, normalise
from plivo_tracker.optouts.models import opt_out_events, opt_outs
from plivo_tracker.outbound import repository as out_repo
from plivo_tracker.plivo.encoding import text_info

if TYPE_CHECKING:
    from plivo_tracker.config import Settings

log = structlog.get_logger(__name__)

IN_CHUNK = 500  # numbers per IN (...) list


@dataclass(frozen=True, slots=True)
class Change:
    """Who or what changes an opt-out, and why (one event when it changes something)."""

    source: str  # keyword | api | cli | import
    now: datetime
    message_id: int | None = None
    keyword: str | None = None
    note: str | None = None


def _event(conn: Connection, number: str, action: str, change: Change) -> None:
    conn.execute(
        opt_out_events.insert(),
        [
            {
                "number": number,
                "action": action,
                "source": change.source,
                "message_id": change.message_id,
                "keyword": change.keyword,
                "note": change.note,
                "at": change.now,
            }
        ],
    )


def opt_out(
    conn: Connection, number: str, change: Change, *, opted_out_at: datetime | None = None
) -> bool:
    """Opt `number` out; True when it was not (then the change is an event too).
    `opted_out_at`: when it happened, if earlier than now (an import of an older list)."""
    row = {
        "number": number,
        "opted_out_at": opted_out_at or change.now,
        "source": change.source,
        "message_id": change.message_id,
        "keyword": change.keyword,
        "note": change.note,
    }
    stmt = insert_ignore(conn.dialect, opt_outs, ["number"]).returning(opt_outs.c.number)
    if conn.execute(stmt, [row]).first() is None:
        return False
    _event(conn, number, "opt_out", change)
    return True


def opt_in(conn: Connection, number: str, change: Change) -> bool:
    """Opt `number` back in; True when it had opted out (then the change is an event too)."""
    deleted = conn.execute(delete(opt_outs).where(opt_outs.c.number == number)).rowcount
    if not deleted:
        return False
    _event(conn, number, "opt_in", change)
    return True


def _number(raw: str) -> str:
    """E.164 when it is a valid number (Plivo may write it without "+"), else as given: an
    opt-out from a sender we could never send to is still recorded."""
    try:
        return phone.to_e164(raw)
    except phone.InvalidNumber:
        return raw.strip()[:64]


def apply_keyword(
    conn: Connection,
    *,
    number: str,
    our_number: str,
    message_id: int,
    text: str | None,
    now: datetime,
    settings: Settings,
) -> Action | None:
    """What an inbound message from `number` to `our_number` asks for, applied in the caller's
    transaction: STOP-like keywords opt the sender out, START-like ones back in (each a change
    with its event, when it changes something), HELP-like ones are recorded and, when
    HELP_TEXT is set, answered from `our_number` through the outbox like any send of ours
    (also to an opted-out number: a HELP is always answered). Returns the keyword's action
    (None: not a keyword), whether or not it changed anything. The same message applied again
    does nothing (its event exists)."""
    action = classify(text, settings)
    if action is None:
        return None
    seen = conn.execute(
        select(opt_out_events.c.id).where(opt_out_events.c.message_id == message_id)
    ).first()
    if seen is not None:
        return action
    assert text is not None
    sender = _number(number)
    change = Change("keyword", now, message_id=message_id, keyword=normalise(text)[:32])
    if action == "opt_out":
        changed = opt_out(conn, sender, change)
    elif action == "opt_in":
        changed = opt_in(conn, sender, change)
    else:
        changed = True
        reply = _queue_help_reply(conn, sender, our_number, settings.help_text, now)
        note = f"answered with message {reply}" if reply is not None else "no HELP_TEXT set"
        _event(conn, sender, "help", Change("keyword", now, message_id, change.keyword, note))
    log.info(
        "optouts.keyword",
        action=action,
        changed=changed,
        message_id=message_id,
        number=sender,
    )
    return action


def _queue_help_reply(
    conn: Connection, to: str, our_number: str, help_text: str, now: datetime
) -> int | None:
    """Queue HELP_TEXT to `to` from `our_number` (None when no text is set)."""
    if not help_text:
        return None
    # Imported here: the outbox checks opt-outs through this module (an import cycle).
    from plivo_tracker.outbound.outbox import Validated

    info = text_info(help_text)
    v = Validated(
        recipients=[to],
        src=our_number,
        text=help_text,
        media_urls=None,
        type="sms",
        encoding=info.encoding,
        segments=info.segments,
    )
    message_id = out_repo.insert_outbound(conn, v, to, now)
    out_repo.notify_outbox(conn)
    return message_id


# ---- reads ---------------------------------------------------------------------------------


def opted_out_among(conn: Connection, numbers: Sequence[str]) -> set[str]:
    """Which of these numbers have opted out (the send's check, in its transaction)."""
    found: set[str] = set()
    for start in range(0, len(numbers), IN_CHUNK):
        chunk = list(numbers[start : start + IN_CHUNK])
        stmt = select(opt_outs.c.number).where(opt_outs.c.number.in_(chunk))
        found.update(conn.execute(stmt).scalars().all())
    return found


def get(conn: Connection, number: str) -> dict[str, Any] | None:
    row = conn.execute(select(opt_outs).where(opt_outs.c.number == number)).mappings().first()
    return dict(row) if row is not None else None


def history(conn: Connection, number: str, limit: int = 1000) -> list[dict[str, Any]]:
    """The number's events, oldest first (the newest `limit` of them)."""
    e = opt_out_events
    stmt = select(e).where(e.c.number == number).order_by(e.c.id.desc()).limit(limit)
    return [dict(r) for r in reversed(conn.execute(stmt).mappings().all())]


def page(conn: Connection, after: str | None, limit: int) -> list[dict[str, Any]]:
    """Opted-out numbers in number order, after `after` (the cursor), at most `limit`."""
    stmt = select(opt_outs).order_by(opt_outs.c.number).limit(limit)
    if after is not None:
        stmt = stmt.where(opt_outs.c.number > after)
    return [dict(r) for r in conn.execute(stmt).mappings()]


# ---- import --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportRow:
    number: str  # E.164
    note: str | None = None
    opted_out_at: datetime | None = None


def import_rows(conn: Connection, rows: Iterable[ImportRow], now: datetime) -> tuple[int, int]:
    """Opt out every row's number (source `import`); returns (added, already opted out)."""
    added = already = 0
    for row in rows:
        change = Change("import", now, note=row.note)
        if opt_out(conn, row.number, change, opted_out_at=row.opted_out_at):
            added += 1
        else:
            already += 1
    return added, already


def keyword_hook(settings: Settings) -> InboundHook:
    """The projector's hook for new inbound messages (wired by the composition root): each
    one's keyword applied, in journal order, in the pass's transaction."""

    def apply(
        conn: Connection, arrivals: Sequence[tuple[int, str, str, str | None]], now: datetime
    ) -> None:
        for message_id, number, our_number, text in arrivals:
            apply_keyword(
                conn,
                number=number,
                our_number=our_number,
                message_id=message_id,
                text=text,
                now=now,
                settings=settings,
            )

    return apply
