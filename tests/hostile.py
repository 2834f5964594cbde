"""Hostile input for every route that takes text: the same corpus for the ASGI tests
(tests/api/test_hostile_input.py) and the real-server test (tests/e2e/test_hostile_server.py).

Each request is (method, target, raw body or None, extra headers). Bodies are bytes, so that
invalid UTF-8 and JSON escapes of lone surrogates reach the server exactly as written.
"""

from __future__ import annotations

import json

# As JSON string literals (escapes kept), so that "\ud800" arrives as a JSON escape.
JSON_STRINGS = {
    "lone surrogate": '"\\ud800"',
    "low surrogate in text": '"ab\\udc00cd"',
    "NUL": '"\\u0000"',
    "NUL inside": '"+1415555\\u00000101"',
    "bell": '"\\u0007"',
    "long": json.dumps("9" * 5000),
}
# Raw bytes inside a JSON string: invalid UTF-8 (a stray byte, an overlong NUL, a CESU surrogate).
RAW_UTF8 = {
    "invalid UTF-8": b'"\xff\xfe"',
    "overlong NUL": b'"\xc0\x80"',
    "encoded surrogate": b'"\xed\xa0\x80"',
}
# Percent-encoded, for paths and query strings.
URL_STRINGS = {
    "NUL": "%00",
    "lone surrogate": "%ED%A0%80",
    "invalid UTF-8": "%FF",
    "overlong NUL": "%C0%80",
    "long": "9" * 3000,
}
SEND_FIELDS = {
    "to": '{"to": %s, "text": "hello"}',
    "to list": '{"to": ["+14155550101", %s], "text": "hello"}',
    "text": '{"to": "+14155550101", "text": %s}',
    "from": '{"to": "+14155550101", "text": "hello", "from": %s}',
    "media_urls": '{"to": "+14155550101", "type": "mms", "media_urls": [%s]}',
}
QUERY_TARGETS = [
    "/api/messages?status={}",
    "/api/messages?to={}",
    "/api/messages?from={}",
    "/api/messages?q={}",
    "/api/messages?since={}",
    "/api/messages?cursor={}",
    "/api/messages?ids={}",
    "/api/messages/{}",
    "/api/stats?window={}",
    "/api/messages?q=ok&{}=1",
    "/api/opt-outs/{}",
    "/api/opt-outs?cursor={}",
]
JSON = {"content-type": "application/json"}

Request = tuple[str, str, bytes | None, dict[str, str | bytes]]


def send_requests() -> dict[str, Request]:
    """POST /api/messages and /api/messages/validate with each field set to each bad string."""
    out: dict[str, Request] = {}
    for route in ("/api/messages", "/api/messages/validate"):
        for field, template in SEND_FIELDS.items():
            for name, literal in JSON_STRINGS.items():
                body = (template % literal).encode()
                out[f"{route} {field}: {name}"] = ("POST", route, body, JSON)
            for name, raw in RAW_UTF8.items():
                body = (template % "@@").encode().replace(b"@@", raw)
                out[f"{route} {field}: {name}"] = ("POST", route, body, JSON)
    # The defect as found: both fields bad at once.
    out["issue 9"] = ("POST", "/api/messages", b'{"to": "\\ud800", "text": "\\u0000"}', JSON)
    body = b'{"to": "+14155550101", "text": "hello"}'
    out["Idempotency-Key: control bytes"] = (
        "POST",
        "/api/messages",
        body,
        {**JSON, "idempotency-key": b"\xff\x01key"},
    )
    out["Idempotency-Key: too long"] = (
        "POST",
        "/api/messages",
        body,
        {**JSON, "idempotency-key": "k" * 300},
    )
    return out


def url_requests() -> dict[str, Request]:
    out: dict[str, Request] = {}
    for target in QUERY_TARGETS:
        for name, value in URL_STRINGS.items():
            if name == "long" and "&{}" in target:
                continue  # an unknown parameter, however long, is ignored (200)
            out[f"GET {target.format('…')}: {name}"] = ("GET", target.format(value), None, {})
    return out


def optout_requests() -> dict[str, Request]:
    """PUT and DELETE /api/opt-outs/{number} with a bad number, and PUT with a bad note."""
    out: dict[str, Request] = {}
    for method in ("PUT", "DELETE"):
        for name, value in URL_STRINGS.items():
            out[f"{method} /api/opt-outs/…: {name}"] = (
                method,
                f"/api/opt-outs/{value}",
                None,
                JSON,
            )
    target = "/api/opt-outs/%2B14155550101"
    for name, literal in JSON_STRINGS.items():
        if name.startswith("NUL inside"):
            continue  # the same as NUL for a note
        out[f"PUT /api/opt-outs note: {name}"] = (
            "PUT",
            target,
            b'{"note": %b}' % literal.encode(),
            JSON,
        )
    for name, raw in RAW_UTF8.items():
        out[f"PUT /api/opt-outs note: {name}"] = ("PUT", target, b'{"note": %b}' % raw, JSON)
    return out


def all_requests() -> dict[str, Request]:
    return {**send_requests(), **url_requests(), **optout_requests()}
