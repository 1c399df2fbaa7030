"""The configuration shape of topic mappings: how a sensor's own payload format becomes readings.

A new sensor vendor needs a mapping in `pantau.toml` (`[[ingest.mappings]]`), not code. Field
specs are strings: `{name}` takes a topic segment captured by the pattern, `$.a.b[0]` takes a
value from the JSON payload (any key in brackets: `$['PM2.5']`), anything else is a literal.
"""

from __future__ import annotations

import re
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pantau.ids import DEVICE_ID, METRIC

# name: (factor, offset) so that value_in_to = value_in_from * factor + offset
CONVERSIONS: dict[str, tuple[float, float]] = {
    "m->cm": (100.0, 0.0),
    "mm->cm": (0.1, 0.0),
    "cm->m": (0.01, 0.0),
    "cm->mm": (10.0, 0.0),
    "m->mm": (1000.0, 0.0),
    "in->mm": (25.4, 0.0),
    "F->C": (5 / 9, -32 * 5 / 9),
    "K->C": (1.0, -273.15),
    "Pa->hPa": (0.01, 0.0),
    "kPa->hPa": (10.0, 0.0),
    "mbar->hPa": (1.0, 0.0),
    "m/s->km/h": (3.6, 0.0),
    "km/h->m/s": (1 / 3.6, 0.0),
    "mg/m3->ug/m3": (1000.0, 0.0),
    "ratio->%": (100.0, 0.0),
}

# A status topic's values, matched case-insensitively (MappingSettings.online / .offline).
STATUS_ONLINE = ("online", "1", "true", "up")
STATUS_OFFLINE = ("offline", "0", "false", "down", "lost")
# Fields of the other formats that a status mapping does not read, and the reverse.
_READING_FIELDS = ("metrics", "values", "records", "time", "rename", "convert")
_STATUS_FIELDS = ("path", "online", "offline", "cause")

_SEGMENT = re.compile(r"\{[a-z_][a-z0-9_]*\}|\+|#|[^+#{}]+")
_TOPIC_VAR = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


class MappingSettings(BaseModel):
    """One topic pattern and how to read its payloads."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="shown in quarantine reasons and metrics")
    topic: str = Field(description="pattern like bekasi/{kecamatan}/{device}/{metric}; + and # too")
    format: Literal["number", "json", "senml", "status"]
    device: str = Field("{device}", description="{topic_var}, $.json.path, or a literal")
    metric: str | None = Field(
        "{metric}", description="number format: {topic_var} or a literal metric name"
    )
    time: str | None = Field(None, description="json: $.path of the timestamp; none = receive time")
    time_unit: Literal["auto", "s", "ms", "us", "ns"] = "auto"
    time_zone: str = Field("UTC", description="for ISO 8601 times without an offset")
    metrics: dict[str, str] = Field(
        default_factory=dict, description="json: metric name -> $.path of its value"
    )
    values: str | None = Field(None, description="json: $.path of an object {metric: value}")
    records: str | None = Field(None, description="json: $.path of an array of records")
    record_metric: str = Field("$.metric", description="json records: metric, in each record")
    record_value: str = Field("$.value", description="json records: value, in each record")
    record_time: str | None = Field(None, description="json records: time, in each record")
    rename: dict[str, str] = Field(default_factory=dict, description="metric -> stored name")
    convert: dict[str, str] = Field(
        default_factory=dict, description="stored metric -> conversion such as 'm->cm'"
    )
    path: str | None = Field(
        None, description="status: $.path of the value in a JSON payload; none = the payload"
    )
    online: list[str] = Field(
        default_factory=lambda: list(STATUS_ONLINE),
        description="status: values meaning up (case-insensitive)",
    )
    offline: list[str] = Field(
        default_factory=lambda: list(STATUS_OFFLINE),
        description="status: values meaning down (case-insensitive)",
    )
    cause: str = Field(
        "offline",
        pattern=r"^[a-z][a-z0-9_]{0,31}$",
        description="status: the outage cause of a device that says it is down",
    )

    @field_validator("topic")
    @classmethod
    def _check_topic(cls, value: str) -> str:
        segments = value.split("/")
        for i, segment in enumerate(segments):
            if not _SEGMENT.fullmatch(segment):
                raise ValueError(
                    f"expected a topic pattern of literal segments, {{name}}, + or #; "
                    f"segment {segment!r} is none of those"
                )
            if segment == "#" and i != len(segments) - 1:
                raise ValueError("expected # only as the last segment")
        return value

    @field_validator("time_zone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"expected an IANA time zone such as Asia/Jakarta, not {value!r}"
            ) from None
        return value

    @field_validator("convert")
    @classmethod
    def _check_conversions(cls, value: dict[str, str]) -> dict[str, str]:
        for metric, conversion in value.items():
            if conversion not in CONVERSIONS:
                raise ValueError(
                    f"conversion {conversion!r} for {metric!r}: expected one of "
                    + ", ".join(sorted(CONVERSIONS))
                )
        return value

    @field_validator("online", "offline")
    @classmethod
    def _check_values(cls, value: list[str]) -> list[str]:
        folded = [v.strip().casefold() for v in value]
        if not folded or not all(folded):
            raise ValueError("expected a list of non-empty values such as ['online', '1']")
        return list(dict.fromkeys(folded))

    @model_validator(mode="after")
    def _check_fields(self) -> MappingSettings:
        variables = set(topic_variables(self.topic))
        specs = {"device": self.device}
        if self.format == "status":
            self._check_status()
        else:
            # Set to something else than their defaults (a dump of the settings has them all).
            stray = [
                f
                for f in _STATUS_FIELDS
                if getattr(self, f)
                != type(self).model_fields[f].get_default(call_default_factory=True)
            ]
            if stray:
                raise ValueError(
                    f"{', '.join(stray)}: only a mapping of format 'status' takes "
                    + ", ".join(_STATUS_FIELDS)
                )
        if self.format == "number":
            if self.metric is None:
                raise ValueError("format 'number' needs metric ({topic_var} or a literal)")
            specs["metric"] = self.metric
            if self.device.startswith("$") or self.metric.startswith("$"):
                raise ValueError(
                    "format 'number' has no JSON fields: take device and metric "
                    "from the topic or give literals"
                )
        if self.format == "json":
            shapes = sum(bool(x) for x in (self.metrics, self.values, self.records))
            if shapes != 1:
                raise ValueError("format 'json' needs exactly one of metrics, values or records")
            paths = {
                "time": self.time,
                "values": self.values,
                "records": self.records,
                "record_metric": self.record_metric,
                "record_value": self.record_value,
                "record_time": self.record_time,
                **{f"metrics.{k}": v for k, v in self.metrics.items()},
            }
            if self.device.startswith("$"):
                paths["device"] = self.device
            for key, path in paths.items():
                if path is not None:
                    try:
                        parse_path(path)
                    except ValueError as exc:
                        raise ValueError(f"{key} = {path!r}: {exc}") from None
        if self.format == "senml" and self.device.startswith("$") and self.device != "$bn":
            raise ValueError("format 'senml' takes the device from the topic or from $bn")
        stored = [(f"rename.{k}", v) for k, v in self.rename.items()]
        stored += [(f"metrics.{k}", self.rename.get(k, k)) for k in self.metrics]
        if self.format == "number" and self.metric and not _TOPIC_VAR.fullmatch(self.metric):
            stored.append(("metric", self.rename.get(self.metric, self.metric)))
        literal = not (self.device.startswith("$") or _TOPIC_VAR.fullmatch(self.device))
        if literal and not DEVICE_ID.fullmatch(self.device):
            raise ValueError(
                f"device = {self.device!r} is not a device id; expected {{topic_var}}, a $.path, "
                f"or up to 128 letters, digits and . _ : @ - starting with a letter or digit"
            )
        for key, name in stored:
            if not METRIC.fullmatch(name):
                raise ValueError(
                    f"{key}: {name!r} is not a metric name; expected up to 128 letters, digits "
                    f"and _ . : / % - starting with a letter, digit or _"
                )
        for key, spec in specs.items():
            var = _TOPIC_VAR.fullmatch(spec)
            if var and var[1] not in variables:
                raise ValueError(
                    f"{key} = {spec!r} but the topic pattern {self.topic!r} has no such segment; "
                    f"expected one of {sorted(variables) or 'none'}"
                )
        return self

    def _check_status(self) -> None:
        stray = [f for f in _READING_FIELDS if getattr(self, f)]
        if stray:
            raise ValueError(
                f"{', '.join(stray)}: a mapping of format 'status' reads no readings; it takes "
                "topic, device, path, online, offline and cause"
            )
        both = sorted(set(self.online) & set(self.offline))
        if both:
            raise ValueError(f"status values {both} are in both online and offline")
        if self.device.startswith("$") and self.path is None:
            raise ValueError(
                f"device = {self.device!r} reads a JSON payload: give the status's path too "
                "(e.g. path = '$.status')"
            )
        paths = {"path": self.path, "device": self.device if self.device[:1] == "$" else None}
        for key, path in paths.items():
            if path is not None:
                try:
                    parse_path(path)
                except ValueError as exc:
                    raise ValueError(f"{key} = {path!r}: {exc}") from None


PathStep = str | int  # a key of an object, or an index of an array

_NAME = re.compile(r"[\w-]+")  # what may follow a dot; any other key goes in brackets
_INDEX = re.compile(r"-?[0-9]+")
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "/": "/", "\\": "\\"}
_EXPECTED = "expected a JSON path such as $.a.b, $.a[0], $['PM2.5'] or $[\"Suhu Udara\"]"


def parse_path(path: str) -> tuple[PathStep, ...]:
    """`$.data['sensor:1'].value[0]` to ("data", "sensor:1", "value", 0).

    Dots take keys of letters, digits, `_` and `-`; brackets take an array index or any key in
    single or double quotes, with JSON's escapes (`\\'`, `\\"`, `\\\\`, `\\n`, `\\u00e9`, ...).
    Raises ValueError naming the position and what was expected there.
    """
    if not path.startswith("$"):
        raise ValueError(f"{_EXPECTED}: it must start with $")
    steps: list[PathStep] = []
    i, end = 1, len(path)
    while i < end:
        char = path[i]
        if char == ".":
            if path[i + 1 : i + 2] in (".", "*"):
                raise ValueError(
                    f"{_EXPECTED}: recursive descent (..) and wildcards (*) are not supported"
                )
            name = _NAME.match(path, i + 1)
            if name is None:
                raise ValueError(
                    f"{_EXPECTED}: at character {i + 2}, expected a key of letters, digits, _ or - "
                    f"after the dot (other keys in brackets and quotes: $['PM2.5'])"
                )
            steps.append(name[0])
            i = name.end()
        elif char == "[":
            j = _skip_blanks(path, i + 1)
            if j < end and path[j] in "'\"":
                key, j = _quoted(path, j)
                steps.append(key)
            else:
                index = _INDEX.match(path, j)
                if index is None:
                    raise ValueError(
                        f"{_EXPECTED}: at character {j + 1}, expected an array index or a "
                        f"quoted key inside the brackets"
                    )
                steps.append(int(index[0]))
                j = index.end()
            j = _skip_blanks(path, j)
            if j >= end or path[j] != "]":
                raise ValueError(f"{_EXPECTED}: at character {j + 1}, expected ]")
            i = j + 1
        else:
            raise ValueError(
                f"{_EXPECTED}: at character {i + 1}, expected . or [ but found {char!r} "
                f"(wildcards, filters and .. are not supported)"
            )
    return tuple(steps)


def format_path(steps: tuple[PathStep, ...] | list[PathStep], quote: str = "'") -> str:
    """The path that `parse_path` reads back as `steps`: dots where they can be, brackets else."""
    out = ["$"]
    for step in steps:
        if isinstance(step, int):
            out.append(f"[{step}]")
        elif _NAME.fullmatch(step):
            out.append("." + step)
        else:
            out.append("[" + quote + _escape(step, quote) + quote + "]")
    return "".join(out)


def _skip_blanks(path: str, i: int) -> int:
    while i < len(path) and path[i] in " \t":
        i += 1
    return i


def _quoted(path: str, start: int) -> tuple[str, int]:
    """The key quoted at `start` and the position after its closing quote."""
    quote = path[start]
    out: list[str] = []
    i = start + 1
    while i < len(path):
        char = path[i]
        if char == quote:
            return "".join(out), i + 1
        if char != "\\":
            out.append(char)
            i += 1
            continue
        code = path[i + 1 : i + 2]
        if code in ("'", '"'):
            out.append(code)
            i += 2
        elif code in _ESCAPES:
            out.append(_ESCAPES[code])
            i += 2
        elif code == "u":
            unit, i = _hex4(path, i + 2)
            if 0xD800 <= unit < 0xDC00 and path[i : i + 2] == "\\u":
                low, after = _hex4(path, i + 2)
                if 0xDC00 <= low < 0xE000:
                    unit = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                    i = after
            out.append(chr(unit))
        else:
            raise ValueError(
                f"{_EXPECTED}: at character {i + 1}, unknown escape {path[i : i + 2]!r} in a "
                f"quoted key; expected one of \\' \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX"
            )
    raise ValueError(f"{_EXPECTED}: the key quoted at character {start + 1} has no closing {quote}")


def _hex4(path: str, i: int) -> tuple[int, int]:
    digits = path[i : i + 4]
    if len(digits) != 4 or any(c not in "0123456789abcdefABCDEF" for c in digits):
        raise ValueError(f"{_EXPECTED}: at character {i + 1}, expected 4 hex digits after \\u")
    return int(digits, 16), i + 4


def _escape(key: str, quote: str) -> str:
    out = []
    for char in key:
        if char == "\\" or char == quote:
            out.append("\\" + char)
        elif ord(char) < 0x20:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)


def topic_variables(pattern: str) -> list[str]:
    return [m[1] for s in pattern.split("/") if (m := _TOPIC_VAR.fullmatch(s))]


def topic_filter(pattern: str) -> str:
    """The MQTT subscription filter of a pattern: every {name} becomes +."""
    return "/".join("+" if _TOPIC_VAR.fullmatch(s) else s for s in pattern.split("/"))


def default_mappings() -> list[MappingSettings]:
    """The conventions of the simulator and of the Bekasi deployment, one per payload format."""
    return [
        # Before bekasi-number, whose {metric} would take `status` for a metric.
        MappingSettings(
            name="bekasi-status",
            topic="bekasi/{kecamatan}/{device}/status",
            format="status",
        ),
        MappingSettings(
            name="bekasi-number",
            topic="bekasi/{kecamatan}/{device}/{metric}",
            format="number",
        ),
        MappingSettings(
            name="bekasi-json",
            topic="bekasi-json/{kecamatan}/{device}",
            format="json",
            time="$.ts",
            values="$.readings",
        ),
        MappingSettings(
            name="bekasi-senml",
            topic="bekasi-senml/{kecamatan}/{device}",
            format="senml",
        ),
    ]
