"""Identifier rules shared by every domain: what a device id and a metric name may look like."""

from __future__ import annotations

import re

DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
METRIC_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:/%-]{0,127}$"
DEVICE_ID = re.compile(DEVICE_ID_PATTERN)
METRIC = re.compile(METRIC_PATTERN)
