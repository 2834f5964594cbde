"""Phone numbers never reach the logs in clear."""

from __future__ import annotations

import json
from typing import Any

import pytest
import structlog

from plivo_tracker.logging import configure_logging, mask_phone, mask_processor


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("+14155550101", "+141******01"),
        ("to 14155550101 from 447700900123", "to 141******01 from 447*******23"),
        ("+1 415-555-0101", "+1 41*-***-**01"),
        ("(415) 555-0101", "(415) ***-**01"),
        ("+1 (415) 555-0101", "+1 (41*) ***-**01"),
        ("+44 7911 123456", "+44 7*** ****56"),
        ("+44 (0)20 7946 0958", "+44 (0)** **** **58"),
        ("+1.415.555.0101", "+1.41*.***.**01"),
        ("tel:+14155550101", "tel:+141******01"),
        ("%2B14155550101", "%2B141******01"),
        ("To=%2B1+415+555+0101&From=%2B14155550100", "To=%2B1+41*+***+**01&From=%2B141******00"),
        ("to=%2B1%20415%20555%200101", "to=%2B1%2041*%20***%20**01"),
        ("To=%2B1+%28415%29+555-0101", "To=%2B1+%2841*%29+***-**01"),
        ("body=To%3D%252B14155550101", "body=To%3D%252B141******01"),
        ('{"to": "+1 415 555 0101"}', '{"to": "+1 41* *** **01"}'),
        (
            "PlivoError('invalid destination +1 415-555-0101', 400)",
            "PlivoError('invalid destination +1 41*-***-**01', 400)",
        ),
        ("/api/messages?to=14155550101", "/api/messages?to=141******01"),
        # Escaped by repr() or JSON: the escape is a separator or a word boundary.
        (repr("+1\xa0415\xa0555\xa00101"), "'+1\\xa041*\\xa0***\\xa0**01'"),
        (json.dumps("+1\u00a0415 555 0101"), '"+1\\u00a041* *** **01"'),
        ("ValueError('line one\\n+14155550101')", "ValueError('line one\\n+141******01')"),
        ("%2B1%C2%A0415%C2%A0555%C2%A00101", "%2B1%C2%A041*%C2%A0***%C2%A0**01"),
        ("+1\u2013415\u2013555\u20130101", "+1\u201341*\u2013***\u2013**01"),
        # Two numbers in a row: masked as one, nothing of either left.
        ("415 555 0101 415 555 0100", "415 *** **** *** *** **00"),
        ("+14155550101 2026-11-29T20:15:03Z", "+141******01 2026-11-29T20:15:03Z"),
    ],
)
def test_mask_phone(text: str, masked: str) -> None:
    assert mask_phone(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "short 12345 stays",
        "uuid 3a9e4b52-6c1d-11ef-9f0e-0242ac120003 stays",
        "00000000-0000-4000-8000-000000000000",
        "2026-11-29T20:15:03.123456+00:00",
        "2026-11-29 20:15:03",
        "on 2026-11-29",
        "20:15:03.123456",
        "127.0.0.1:8000",
        "connect call failed ('10.200.30.255', 5432)",
        "port 5432",
        "status=200 http_status=429 error_code=30 event_id=4711",
        "TotalRate=0.00500 TotalAmount=12.00500",
        "took 0.0012345 s, 1234567ms, 12.345678",
        "nonce 12345678901234567890",
        "api_id=3a9e4b52-6c1d-11ef-9f0e-0242ac120003",
        "0x1234567 v1.22.333 HTTP/1.1 200 OK",
        "[Errno 111] Connect call failed",
    ],
)
def test_not_phone_numbers_stay(text: str) -> None:
    assert mask_phone(text) == text


class _Url:
    def __repr__(self) -> str:
        return "URL('https://api.plivo.com/v1/Message/?to_number=%2B14155550101')"


def test_processor_masks_nested_values_and_reprs() -> None:
    event: dict[str, Any] = {
        "event": "callback.seen",
        "fields": {"To": "+1 415-555-0101", "+14155550100": "key", "Units": "1"},
        "parts": ["(415) 555-0101", ("+44 7911 123456", 3)],
        "error": ValueError("no route to +14155550101"),
        "url": _Url(),
        "body": b"To=%2B14155550101",
        "count": 14155550101,
        "ok": True,
        "missing": None,
        "ratio": 0.5,
    }
    out = mask_processor(None, "info", event)
    assert out["fields"] == {"To": "+1 41*-***-**01", "+141******00": "key", "Units": "1"}
    assert out["parts"] == ["(415) ***-**01", ("+44 7*** ****56", 3)]
    assert out["error"] == "ValueError('no route to +141******01')"
    assert out["url"] == "URL('https://api.plivo.com/v1/Message/?to_number=%2B141******01')"
    assert out["body"] == "b'To=%2B141******01'"
    # Numbers stay numbers: only what is rendered as text is masked.
    assert (out["count"], out["ok"], out["missing"], out["ratio"]) == (14155550101, True, None, 0.5)


def test_log_lines_are_masked(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "info")
    try:
        log = structlog.get_logger("t")
        log.info("callback.seen", to="+14155550101", fields={"From": "14155550100"})
        try:
            raise RuntimeError("Plivo refused +1 (415) 555-0101")
        except RuntimeError as exc:
            log.warning(
                "send.failed",
                error=repr(exc),
                cause=exc,
                query="To=%2B1+415+555+0101&Text=hi",
                exc_info=True,
            )
        lines = [json.loads(x) for x in capsys.readouterr().err.strip().splitlines()[-2:]]
    finally:
        structlog.reset_defaults()
    assert lines[0]["to"] == "+141******01"
    assert lines[0]["fields"]["From"] == "141******00"
    assert lines[1]["error"] == "RuntimeError('Plivo refused +1 (41*) ***-**01')"
    assert lines[1]["cause"] == lines[1]["error"]
    assert lines[1]["query"] == "To=%2B1+41*+***+**01&Text=hi"
    assert "RuntimeError: Plivo refused +1 (41*) ***-**01" in lines[1]["exception"]
    text = json.dumps(lines)
    assert "5550" not in text
    assert "555-" not in text
