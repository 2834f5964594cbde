"""Plivo SMS/MMS error codes: meaning and class (plivo-protocol.md §4), pure.

"Retryable" means a *new* send later may succeed; Plivo itself never retries for us.
The 30000-range codes belong to another provider and are deliberately absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ErrorClass = Literal["permanent", "retryable", "unclear"]


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    code: str
    meaning: str
    error_class: ErrorClass


_TABLE: dict[int, tuple[str, ErrorClass]] = {
    10: ("Invalid message (empty, too long, or rejected as invalid)", "permanent"),
    20: ("Network error (temporary, retry later)", "retryable"),
    30: ("Spam detected / carrier filtering", "permanent"),
    40: ("Invalid source number", "permanent"),
    50: ("Invalid destination number", "permanent"),
    60: ("Loop detected", "permanent"),
    70: ("Destination permanently unavailable", "permanent"),
    80: ("Destination temporarily unavailable (retry later)", "retryable"),
    90: ("No route available", "unclear"),
    100: ("Prohibited by carrier", "permanent"),
    110: ("Message too long", "permanent"),
    200: ("Destination replied STOP (opted out)", "permanent"),
    201: ("US toll-free sender to Canadian destination blocked", "permanent"),
    300: ("Failed to dispatch message", "unclear"),
    420: ("Expired in Plivo's queue (not charged)", "retryable"),
    450: ("Destination country not enabled (Geo Permissions)", "permanent"),
    900: ("Insufficient credit (not charged)", "retryable"),
    910: ("Account disabled", "permanent"),
    1000: ("Unknown error", "unclear"),
}

KNOWN_CODES: tuple[str, ...] = tuple(str(code) for code in _TABLE)


def normalize(code: str | None) -> str | None:
    """Missing, empty and "000" all mean "no error" (§2.2); other values are kept as sent."""
    if code is None:
        return None
    code = code.strip()
    if not code or code.strip("0") == "":
        return None
    return code


def describe(code: str | None) -> ErrorInfo | None:
    """Meaning of a Plivo error code; unknown codes get "unknown Plivo error <n>"."""
    code = normalize(code)
    if code is None:
        return None
    try:
        entry = _TABLE.get(int(code))
    except ValueError:
        entry = None
    if entry is None:
        return ErrorInfo(code, f"unknown Plivo error {code}", "unclear")
    return ErrorInfo(code, entry[0], entry[1])
