"""Logging, configured once at the entry point: JSON lines for machines, text on a terminal.
Every line passes `RedactFilter` first: no URL credentials (`scheme://user:pass@`) reach a log."""

from __future__ import annotations

import logging
import sys
from typing import Literal

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from streams.urls import redact_text

_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_JSON_FIELDS = "%(levelname)s %(name)s %(message)s"


# Attributes every LogRecord has; any other is an `extra` and is redacted too (JSON shows them).
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class RedactFilter(logging.Filter):
    """Redacts URL credentials in a record's message, exception and stack text and string
    extras, before any formatter sees it: Pantau's own lines, third-party ones (PyAV errors
    quote the URL they failed to open) and tracebacks alike. The exception is rendered here,
    once, and kept as `exc_text` only (formatters would render `exc_info` again, unredacted)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the format: logging would print them
            message = f"{record.msg} (bad log arguments)"
            record.msg, record.args = message, None
        redacted = redact_text(message)
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = _FORMATTER.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        for key, value in list(vars(record).items()):
            if isinstance(value, str) and key not in _RECORD_ATTRS:
                setattr(record, key, redact_text(value))
        return True


_FORMATTER = logging.Formatter()


def configure(level: str, fmt: Literal["auto", "json", "text"] = "auto") -> None:
    """Send every logger to stderr in the chosen format; `auto` picks text on a TTY."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter
    if use_json:
        formatter = JsonFormatter(
            _JSON_FIELDS,
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",  # ISO 8601, UTC
            reserved_attrs=[*RESERVED_ATTRS, "color_message"],  # uvicorn's ANSI duplicate
        )
    else:
        formatter = logging.Formatter(_TEXT_FORMAT)
    handler.setFormatter(formatter)
    handler.addFilter(RedactFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Access logs of every /metrics scrape and /readyz probe would drown the useful lines.
    logging.getLogger("uvicorn.access").setLevel(max(logging.WARNING, root.level))
