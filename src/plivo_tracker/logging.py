"""structlog set-up: console or JSON, bound context, and phone numbers masked everywhere."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Anything that looks like a phone number: 7-15 digits with an optional "+".
_PHONE = re.compile(r"(?<![\w-])\+?\d{7,15}(?![\w-])")


def mask_phone(text: str) -> str:
    """Keep the first 3 and last 2 digits: '+14155550101' → '+141******01'."""

    def _mask(m: re.Match[str]) -> str:
        s = m.group(0)
        plus = "+" if s.startswith("+") else ""
        digits = s.lstrip("+")
        return plus + digits[:3] + "*" * (len(digits) - 5) + digits[-2:]

    return _PHONE.sub(_mask, text)


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask_phone(value)
    if isinstance(value, dict):
        return {k: _mask_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_value(v) for v in value]
    return value


def mask_processor(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> Any:
    for key, value in list(event_dict.items()):
        event_dict[key] = _mask_value(value)
    return event_dict


def configure_logging(fmt: str | None, level: str) -> None:
    """Console renderer in a TTY, JSON lines otherwise (or as LOG_FORMAT says)."""
    if fmt is None:
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any = (
        structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            mask_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
