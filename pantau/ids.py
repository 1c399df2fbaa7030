"""Identifier rules shared by every domain: what a device id and a metric name may look like.

Matched whole: the compiled patterns end in `\\Z`, never `$` (which in Python also matches before
a final newline, so `pm25\\n` would pass). The `*_PATTERN` strings are for pydantic and JSON
Schema, whose regex engines (Rust, ECMA-262) read `$` as the end of the text.
"""

from __future__ import annotations

import re

_DEVICE_ID = r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}"
_METRIC = r"[A-Za-z0-9_][A-Za-z0-9_.:/%-]{0,127}"
DEVICE_ID_PATTERN = rf"^{_DEVICE_ID}$"
METRIC_PATTERN = rf"^{_METRIC}$"
DEVICE_ID = re.compile(rf"\A{_DEVICE_ID}\Z")
METRIC = re.compile(rf"\A{_METRIC}\Z")


def is_device_id(text: str) -> bool:
    return DEVICE_ID.fullmatch(text) is not None


def is_metric(text: str) -> bool:
    return METRIC.fullmatch(text) is not None
