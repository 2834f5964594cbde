"""Phone numbers never reach the logs in clear."""

from __future__ import annotations

import json

import pytest
import structlog

from plivo_tracker.logging import configure_logging, mask_phone


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("+14155550101", "+141******01"),
        ("to 14155550101 from 447700900123", "to 141******01 from 447*******23"),
        ("short 12345 stays", "short 12345 stays"),
        (
            "uuid 3a9e4b52-6c1d-11ef-9f0e-0242ac120003 stays",
            "uuid 3a9e4b52-6c1d-11ef-9f0e-0242ac120003 stays",
        ),
    ],
)
def test_mask_phone(text: str, masked: str) -> None:
    assert mask_phone(text) == masked


def test_log_lines_are_masked(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "info")
    try:
        structlog.get_logger("t").info(
            "callback.seen", to="+14155550101", fields={"From": "14155550100"}
        )
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    finally:
        structlog.reset_defaults()
    assert line["to"] == "+141******01"
    assert line["fields"]["From"] == "141******00"
    assert "4155550" not in json.dumps(line)
