"""Which MDR, if any, an ambiguous send created: the matching rule, pure (docs/adr/0008).

A send is ambiguous when Plivo may have created the message without telling us its UUID (a
5xx, a timeout or reset after the request left, a 2xx without the documented body). Before any
resend, List Messages is asked for outbound messages to the same recipient, from the same
sender, created in a window around our attempts; this module decides what the answer means.

An MDR is a candidate when every fact Plivo gives agrees with ours:
- direction `outbound` (when given);
- recipient: the same digits (Plivo writes numbers without `+`);
- sender: the same digits for a number, the same text (case-insensitive) for an alphanumeric
  sender id; not compared for a Powerpack (Plivo picks the number);
- type (`sms`/`mms`) when given;
- `message_time` (its UTC offset parsed) inside [first attempt − skew, last attempt + skew];
  an MDR whose time cannot be read is neither ruled in nor out: the lookup is undecided;
- `units` equal to our segment count, for SMS when both are known;
- its UUID does not already belong to another message of ours.

Then: exactly one candidate → FOUND (adopt it); none, and the answer was complete (every page
read) → NOT_FOUND (nothing was created: a resend is safe); anything else → UNDECIDED (ask
again later; after enough undecided lookups the message waits for an operator as `unknown`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

CLOCK_SKEW = timedelta(minutes=1)
_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S.%f%z", "%Y-%m-%d %H:%M:%S%z", "%Y-%m-%d %H:%M%z")


class Verdict(StrEnum):
    FOUND = "found"
    NOT_FOUND = "not_found"
    UNDECIDED = "undecided"


@dataclass(frozen=True, slots=True)
class Expected:
    """What we know of the message we tried to send."""

    to: str  # E.164
    src: str  # our sender: digits, an alphanumeric id, or "powerpack:<uuid>"
    type: str  # sms | mms
    segments: int | None
    first_attempt: datetime  # when the first attempt started (UTC)
    last_attempt: datetime  # when the last ambiguous attempt ended (UTC)

    def window(self, skew: timedelta = CLOCK_SKEW) -> tuple[datetime, datetime]:
        return self.first_attempt - skew, self.last_attempt + skew


@dataclass(frozen=True, slots=True)
class Match:
    verdict: Verdict
    reason: str
    message_uuid: str | None = None
    candidates: tuple[str, ...] = ()


def digits(number: str | None) -> str:
    return "".join(ch for ch in str(number or "") if ch.isdigit())


def is_number(src: str) -> bool:
    """A sender that is a phone number or short code (compared by digits), not an id."""
    stripped = src.strip().lstrip("+")
    return bool(stripped) and stripped.isdigit()


def parse_mdr_time(value: Any) -> datetime | None:
    """`2017-05-22 21:36:14+05:30` (offset parsed; none given means UTC) → aware UTC datetime."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().replace("T", " ")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    candidates = [text]
    if not any(sign in text[10:] for sign in "+-"):
        candidates.append(text + "+00:00")
    for candidate in candidates:
        for fmt in _TIME_FORMATS:
            try:
                return datetime.strptime(candidate, fmt).astimezone(UTC)
            except ValueError:
                continue
    return None


def _sender_agrees(mdr: Mapping[str, Any], src: str) -> bool:
    if src.startswith("powerpack:"):
        return True
    given = mdr.get("from_number")
    if given is None or given == "":
        return True  # not given: nothing to compare
    if is_number(src):
        return digits(given) == digits(src)
    return str(given).strip().lower() == src.strip().lower()


def _units_agree(mdr: Mapping[str, Any], expected: Expected) -> bool:
    units = mdr.get("units")
    if expected.type != "sms" or expected.segments is None or units in (None, ""):
        return True
    try:
        return int(units) == expected.segments
    except (TypeError, ValueError):
        return True


def match(
    mdrs: Iterable[Mapping[str, Any]],
    expected: Expected,
    owned: Set[str],
    *,
    complete: bool,
) -> Match:
    """Decide what a List Messages answer says about one ambiguous send.

    `owned`: UUIDs that already belong to another message of ours. `complete`: every page of
    the answer was read.
    """
    start, end = expected.window()
    want_to = digits(expected.to)
    found: list[str] = []
    unreadable = 0
    for mdr in mdrs:
        uuid = mdr.get("message_uuid")
        if not isinstance(uuid, str) or not uuid or uuid in owned:
            continue
        direction = mdr.get("message_direction")
        if direction not in (None, "", "outbound"):
            continue
        if digits(mdr.get("to_number")) != want_to:
            continue
        if not _sender_agrees(mdr, expected.src):
            continue
        kind = mdr.get("message_type")
        if kind not in (None, "") and str(kind).lower() != expected.type:
            continue
        if not _units_agree(mdr, expected):
            continue
        when = parse_mdr_time(mdr.get("message_time"))
        if when is None:
            unreadable += 1
            continue
        if start <= when <= end:
            found.append(uuid)
    unique = tuple(dict.fromkeys(found))
    if unreadable:
        return Match(Verdict.UNDECIDED, f"{unreadable} MDR(s) without a readable message_time")
    if len(unique) == 1:
        return Match(Verdict.FOUND, "one matching message", unique[0], unique)
    if len(unique) > 1:
        return Match(
            Verdict.UNDECIDED, f"{len(unique)} messages match: cannot tell which", None, unique
        )
    if not complete:
        return Match(Verdict.UNDECIDED, "more pages than one lookup may read")
    return Match(Verdict.NOT_FOUND, "no matching message at Plivo")


def list_filters(expected: Expected, skew: timedelta = CLOCK_SKEW) -> dict[str, str]:
    """List Messages filters for the lookup (plivo-protocol.md §1.6): E.164 `to_number` with
    `+`, `from_number` for a number sender, outbound only, a UTC window around the attempts."""
    start, end = expected.window(skew)
    filters = {
        "message_direction": "outbound",
        "to_number": "+" + digits(expected.to),
        "message_time__gte": start.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "message_time__lte": end.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "limit": "20",
    }
    if is_number(expected.src):
        filters["from_number"] = digits(expected.src)
    return filters
