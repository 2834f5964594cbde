"""The one error shape (web/envelope.py): HTTP bodies and WebSocket frames."""

from __future__ import annotations

import json

from plivo_tracker.web.envelope import encode, error_body, error_envelope, error_frame


def test_http_errors_carry_code_and_message_under_error() -> None:
    assert json.loads(error_body("not_found", "no message 7")) == {
        "error": {"code": "not_found", "message": "no message 7"}
    }
    assert error_envelope("validation_error", "bad", problems=[{"loc": ["to"]}]) == {
        "error": {"code": "validation_error", "message": "bad", "problems": [{"loc": ["to"]}]}
    }


def test_websocket_error_frames_carry_the_same_fields_beside_their_type() -> None:
    frame = json.loads(error_frame("rate_limited", "retry in 3 s", retry_after=3))
    assert frame == {
        "type": "error",
        "code": "rate_limited",
        "message": "retry in 3 s",
        "retry_after": 3,
    }
    assert list(frame) == ["type", "code", "message", "retry_after"]


def test_a_lone_surrogate_echoed_from_the_input_never_breaks_the_answer() -> None:
    body = error_body("not_found", "no message '\ud800'")
    assert json.loads(body)["error"]["message"] == "no message '\ufffd'"
    assert encode({"text": "ok ✓"}) == '{"text":"ok ✓"}'.encode()
