"""Logging, configured once at the entry point: JSON lines for machines, text on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Literal

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_JSON_FIELDS = "%(levelname)s %(name)s %(message)s"


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
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Access logs of every /metrics scrape and /readyz probe would drown the useful lines.
    logging.getLogger("uvicorn.access").setLevel(max(logging.WARNING, root.level))
