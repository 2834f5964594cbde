"""Property tests of phone-number masking: every way of writing a number is masked, and what is
not a number (UUIDs, timestamps, IP addresses, small integers, amounts) is left alone."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, quote_plus, urlencode

from hypothesis import given, settings
from hypothesis import strategies as st

from plivo_tracker.logging import mask_phone, mask_processor

COUNTRY_CODES = st.integers(1, 999).map(str)
NATIONAL = st.text("0123456789", min_size=7, max_size=12)
PLAIN_SEPARATORS = [" ", "-", "\u00a0", "\u2013", "\u202f"]


@st.composite
def groups(draw: st.DrawFn, digits: str) -> list[str]:
    """`digits` cut into groups of 2-4 (at least two groups)."""
    out: list[str] = []
    rest = digits
    while len(rest) > 4 or (not out and rest):
        size = draw(st.integers(2, min(4, len(rest) - 2)))
        out.append(rest[:size])
        rest = rest[size:]
    if rest:
        out.append(rest)
    return out


@st.composite
def written(draw: st.DrawFn) -> tuple[str, str]:
    """(the national digits, one way of writing the whole number)."""
    cc = draw(COUNTRY_CODES)
    national = draw(NATIONAL)
    parts = draw(groups(national))
    style = draw(
        st.sampled_from(
            ["plain", "plus", "grouped", "dots", "parens", "%2B+", "%2B%20", "quote_plus", "quote"]
        )
    )
    sep = draw(st.sampled_from(PLAIN_SEPARATORS))
    plus = draw(st.sampled_from(["+", ""]))
    if style == "plain":
        text = cc + national
    elif style == "plus":
        text = "+" + cc + national
    elif style == "grouped":
        text = plus + cc + sep + sep.join(parts)
    elif style == "dots":
        text = "+" + cc + "." + ".".join(parts)
    elif style == "parens":
        text = plus + cc + " (" + parts[0] + ") " + "-".join(parts[1:])
    elif style == "%2B+":
        text = "%2B" + cc + "+" + "+".join(parts)
    elif style == "%2B%20":
        text = "%2B" + cc + "%20" + "%20".join(parts)
    elif style == "quote_plus":
        text = quote_plus("+" + cc + " " + " ".join(parts))
    else:
        text = quote("+" + cc + " (" + parts[0] + ") " + " ".join(parts[1:]), safe="")
    return national, text


def embedded(number: str, how: str) -> Any:
    if how == "alone":
        return number
    if how == "sentence":
        return f"Plivo refused the destination {number}, giving up."
    if how == "query":
        return f"/plivo/callback?To={number}&Text=hello%20there&Units=1"
    if how == "form":
        return urlencode({"To": number, "Text": "hi"})
    if how == "json":
        return json.dumps({"to": number, "text": "hi"})
    if how == "repr":
        return repr(ValueError(f"invalid number {number}"))
    if how == "exception":
        return RuntimeError(f"invalid number {number}")
    return {"fields": [{"To": number}, (number, 1)], number: {"again": number}}


ESCAPE = re.compile(r"%(?:25)?[0-9A-Fa-f]{2}|\\+(?:u[0-9A-Fa-f]{4}|x[0-9A-Fa-f]{2})")


def digits_left(rendered: str) -> str:
    """The digits and mask characters of a rendered event, separators and escapes removed."""
    return re.sub(r"[^0-9*]", "", ESCAPE.sub("", rendered))


@settings(max_examples=600, deadline=None)
@given(
    written(),
    st.sampled_from(["alone", "sentence", "query", "form", "json", "repr", "exception", "nested"]),
)
def test_numbers_are_masked_however_written(number: tuple[str, str], how: str) -> None:
    national, text = number
    event = {"event": "callback.seen", "value": embedded(text, how)}
    rendered = json.dumps(mask_processor(None, "info", event), ensure_ascii=False)
    left = digits_left(rendered)
    for i in range(len(national) - 4):
        assert national[i : i + 5] not in left, (text, rendered)


TIMES = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 12, 31))
OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


@st.composite
def not_numbers(draw: st.DrawFn) -> str:
    kind = draw(
        st.sampled_from(["uuid", "iso", "iso_tz", "str", "date", "ip", "ip_port", "int", "amount"])
    )
    if kind == "uuid":
        return str(draw(st.uuids()))
    if kind == "iso":
        return draw(TIMES).isoformat()
    if kind == "iso_tz":
        return draw(TIMES).replace(tzinfo=draw(st.sampled_from([UTC]) | OFFSETS)).isoformat()
    if kind == "str":
        return str(draw(TIMES).replace(tzinfo=UTC))
    if kind == "date":
        return draw(TIMES).date().isoformat()
    if kind in ("ip", "ip_port"):
        ip = str(draw(st.ip_addresses(v=4)))
        return ip + (f":{draw(st.integers(0, 65535))}" if kind == "ip_port" else "")
    if kind == "int":
        return str(draw(st.integers(-999_999, 999_999)))
    return f"{draw(st.floats(0, 99_999, allow_nan=False)):.5f}"


@settings(max_examples=600, deadline=None)
@given(not_numbers())
def test_other_values_are_unchanged(value: str) -> None:
    assert mask_phone(value) == value
    line = f"at={value} id={value} [{value}] ({value!r}, 200)"
    assert mask_phone(line) == line
    event = {"event": "x", "nested": {"values": [value, (value,)]}}
    assert mask_processor(None, "info", dict(event)) == {
        "event": "x",
        "nested": {"values": [value, (value,)]},
    }
