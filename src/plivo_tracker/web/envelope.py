"""The one error shape, pure: `{"error": {"code", "message", ...details}}`.

Every layer that answers with an error builds it here: the plain-ASGI callback endpoint
(inbound/routes.py), the URL guard, the body limit and the access layer (`send_error` in
web/hygiene.py), FastAPI's handlers (web/errors.py), and the WebSocket stream, whose error
frames carry the same fields beside `"type": "error"` (live/routes.py, web/access.py).
`encode` is the one JSON encoder of our answers: it never fails, a lone surrogate echoed from
the input becomes U+FFFD.
"""

from __future__ import annotations

import json
import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def encode(content: Any) -> bytes:
    """Compact UTF-8 JSON of anything json can serialise, lone surrogates replaced."""
    text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from the input, echoed: replace it
        return _SURROGATE.sub("\ufffd", text).encode("utf-8")


def error_fields(code: str, message: str, **details: Any) -> dict[str, Any]:
    """The error itself: a stable `code`, a human `message`, then any details."""
    return {"code": code, "message": message, **details}


def error_envelope(code: str, message: str, **details: Any) -> dict[str, Any]:
    """The body of every HTTP error answer."""
    return {"error": error_fields(code, message, **details)}


def error_body(code: str, message: str, **details: Any) -> bytes:
    """`error_envelope` encoded, for layers that answer in plain ASGI."""
    return encode(error_envelope(code, message, **details))


def error_frame(code: str, message: str, **details: Any) -> str:
    """A WebSocket error frame: `{"type": "error", "code", "message", ...details}`."""
    return encode({"type": "error", **error_fields(code, message, **details)}).decode("utf-8")
