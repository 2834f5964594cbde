"""Phone numbers and text, pure: E.164 validation, and what text can be stored or sent.

How Plivo encodes and splits a text into segments is Plivo's rule: plivo/encoding.py."""

from __future__ import annotations

import re

import phonenumbers


class InvalidNumber(ValueError):
    """The reason a recipient is not a valid phone number."""


def to_e164(raw: str) -> str:
    """'+1 (415) 555-0101' → '+14155550101'. Numbers need their country code (leading + or
    international digits); anything that is not a valid number raises InvalidNumber."""
    text = raw.strip()
    if not text:
        raise InvalidNumber("empty")
    if not text.startswith("+"):
        text = "+" + text.lstrip("0")  # Plivo numbers are written with the country code, no "+"
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidNumber(str(exc.args[0]) if exc.args else "not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidNumber("not a valid number for its country")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


_SURROGATE = re.compile("[\ud800-\udfff]")
# C0 controls and DEL, except tab, line feed and carriage return (a text may hold lines).
_CONTROL_IN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL_IN_LINE = re.compile("[\x00-\x1f\x7f]")


def text_problem(value: str, *, multiline: bool = True) -> str | None:
    """Why `value` cannot be stored or sent as text, or None when it can.

    NUL is refused by PostgreSQL in text columns and other control characters have no use in
    an SMS; a lone surrogate (legal in a JSON escape) cannot be encoded as UTF-8. The reason
    never repeats the value.
    """
    if _SURROGATE.search(value):
        return "contains a lone surrogate (not valid Unicode text)"
    found = (_CONTROL_IN_TEXT if multiline else _CONTROL_IN_LINE).search(value)
    if found:
        char = found.group()
        name = "NUL" if char == "\x00" else f"U+{ord(char):04X}"
        return f"contains a control character ({name})"
    return None
