"""The configuration shape of topic mappings: how a sensor's own payload format becomes readings.

A new sensor vendor needs a mapping in `pantau.toml` (`[[ingest.mappings]]`), not code. Field
specs are strings: `{name}` takes a topic segment captured by the pattern, `$.a.b[0]` takes a
value from the JSON payload, anything else is a literal.
"""

from __future__ import annotations

import re
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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

_SEGMENT = re.compile(r"^(\{[a-z_][a-z0-9_]*\}|\+|#|[^+#{}]+)$")
_PATH = re.compile(r"^\$(\.[A-Za-z0-9_\-]+|\[\d+\])*$")
_TOPIC_VAR = re.compile(r"^\{([a-z_][a-z0-9_]*)\}$")


class MappingSettings(BaseModel):
    """One topic pattern and how to read its payloads."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="shown in quarantine reasons and metrics")
    topic: str = Field(description="pattern like bekasi/{kecamatan}/{device}/{metric}; + and # too")
    format: Literal["number", "json", "senml"]
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

    @field_validator("topic")
    @classmethod
    def _check_topic(cls, value: str) -> str:
        segments = value.split("/")
        for i, segment in enumerate(segments):
            if not _SEGMENT.match(segment):
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

    @model_validator(mode="after")
    def _check_fields(self) -> MappingSettings:
        variables = set(topic_variables(self.topic))
        specs = {"device": self.device}
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
            for key, path in paths.items():
                if path is not None and not _PATH.match(path):
                    raise ValueError(f"{key} = {path!r}: expected a JSON path like $.a.b or $.a[0]")
        if self.format == "senml" and self.device.startswith("$") and self.device != "$bn":
            raise ValueError("format 'senml' takes the device from the topic or from $bn")
        for key, spec in specs.items():
            var = _TOPIC_VAR.match(spec)
            if var and var[1] not in variables:
                raise ValueError(
                    f"{key} = {spec!r} but the topic pattern {self.topic!r} has no such segment; "
                    f"expected one of {sorted(variables) or 'none'}"
                )
        return self


def topic_variables(pattern: str) -> list[str]:
    return [m[1] for s in pattern.split("/") if (m := _TOPIC_VAR.match(s))]


def topic_filter(pattern: str) -> str:
    """The MQTT subscription filter of a pattern: every {name} becomes +."""
    return "/".join("+" if _TOPIC_VAR.match(s) else s for s in pattern.split("/"))


def default_mappings() -> list[MappingSettings]:
    """The conventions of the simulator and of the Bekasi deployment, one per payload format."""
    return [
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
