"""Decoders: a payload in a sensor's own format becomes readings, or problems with a reason.

Nothing here raises on bad input: every way a payload can be wrong ends as a `Problem`, and the
message is quarantined whole by the caller. Formats: a bare number (device and metric from the
topic), JSON objects (fixed metric paths, a {metric: value} object, or an array of records),
SenML JSON (RFC 8428), and status (a device's `online`/`offline`: a status, not a reading).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

import orjson

from pantau.ids import DEVICE_ID, METRIC
from pantau.mappings import CONVERSIONS, MappingSettings, parse_path

# (time, device_id, metric, value): the row written to `readings`.
Reading = tuple[datetime, str, str, float]
# (device_id, up, cause): what a status or last-will message says of its device.
Status = tuple[str, bool, str | None]

# Reasons are a closed set: they label metrics and are what `quarantine replay --reason` takes.
NO_MAPPING = "no_mapping"
MALFORMED = "malformed_payload"
MISSING_FIELD = "missing_field"
BAD_VALUE = "bad_value"
BAD_TIME = "bad_timestamp"
TIME_RANGE = "time_out_of_range"
BAD_DEVICE = "bad_device_id"
BAD_METRIC = "bad_metric"
CONFLICTING = "conflicting_readings"
UNREGISTERED = "unregistered_device"
REJECTED = "rejected_by_database"
PAYLOAD_TOO_LARGE = "payload_too_large"
TOO_MANY_READINGS = "too_many_readings"
UNSTORABLE = "unstorable"
BAD_STATUS = "bad_status"
REASONS = (
    NO_MAPPING,
    MALFORMED,
    MISSING_FIELD,
    BAD_VALUE,
    BAD_TIME,
    TIME_RANGE,
    BAD_DEVICE,
    BAD_METRIC,
    CONFLICTING,
    UNREGISTERED,
    REJECTED,
    PAYLOAD_TOO_LARGE,
    TOO_MANY_READINGS,
    UNSTORABLE,
    BAD_STATUS,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SENML_RELATIVE = 2**28  # SenML times below this are relative to now (RFC 8428 4.5.3)
_SENML_VERSION = 10  # RFC 8428's; a pack with a higher bver must not be used
_SENML_LABELS = frozenset(
    ("bn", "bt", "bu", "bv", "bs", "bver", "n", "u", "v", "vs", "vb", "vd", "s", "t", "ut")
)
_UNIT_DIVISORS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_MISSING = object()


@dataclass(slots=True)
class Problem:
    reason: str
    detail: str


@dataclass(slots=True)
class Decoded:
    readings: list[Reading] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    status: Status | None = None  # format "status" only

    def problem(self, reason: str, detail: str) -> None:
        self.problems.append(Problem(reason, detail))


@dataclass(frozen=True)
class Limits:
    """How far from the receive time a reading's own time may be."""

    max_future: timedelta = timedelta(minutes=5)
    max_past: timedelta = timedelta(days=7)


class BadField(Exception):
    """Internal: a field could not be read; carries the quarantine reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def compile_path(path: str) -> Callable[[Any], Any]:
    """`$.a['b c'][0]` to a getter returning the value or _MISSING. The path is parsed once into
    steps (`pantau.mappings.parse_path`), so a bracketed key costs what a dotted one does: a few
    lines beat a JSONPath library here, as this runs for every reading."""
    steps: tuple[Any, ...] = parse_path(path)  # str keys and int indexes, told apart by type
    if not steps:
        return _identity
    if all(type(step) is str for step in steps):

        def get_keys(doc: Any) -> Any:
            try:
                for step in steps:
                    doc = doc[step]
            except (KeyError, TypeError):  # no such key, or not an object (a list, a string)
                return _MISSING
            return doc

        return get_keys

    def get(doc: Any) -> Any:
        for step in steps:
            if type(step) is str:
                if type(doc) is not dict:
                    return _MISSING
                doc = doc.get(step, _MISSING)
                if doc is _MISSING:
                    return doc
            else:
                if type(doc) is not list:  # an index reaches into arrays only, not strings
                    return _MISSING
                try:
                    doc = doc[step]
                except IndexError:
                    return _MISSING
        return doc

    return get


def _identity(doc: Any) -> Any:
    return doc


def to_value(raw: Any) -> float:
    """A finite number from a JSON number, a numeric string or a boolean (1/0)."""
    kind = type(raw)
    if kind is float or kind is int:
        value = float(raw)
    elif kind is bool:
        return 1.0 if raw else 0.0
    elif kind is str:
        try:
            value = float(raw.strip())
        except ValueError:
            raise BadField(BAD_VALUE, f"value {raw[:40]!r} is not a number") from None
    else:
        raise BadField(BAD_VALUE, f"value {_short(raw)} is not a number")
    if not math.isfinite(value):
        raise BadField(BAD_VALUE, f"value {raw!r} is not finite")
    return value


def to_time(raw: Any, unit: str, zone: tzinfo) -> datetime:
    """Epoch seconds/ms/us/ns (by `unit`, or guessed from the magnitude) or ISO 8601."""
    if type(raw) is str:
        text = raw.strip()
        try:
            raw = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                raise BadField(
                    BAD_TIME, f"time {text[:40]!r} is neither epoch nor ISO 8601"
                ) from None
            return parsed.replace(tzinfo=zone) if parsed.tzinfo is None else parsed
    if type(raw) not in (int, float) or not math.isfinite(raw):
        raise BadField(BAD_TIME, f"time {_short(raw)} is neither epoch nor ISO 8601")
    if unit == "auto":
        magnitude = abs(raw)
        unit = (
            "s"
            if magnitude < 1e11
            else "ms"
            if magnitude < 1e14
            else "us"
            if magnitude < 1e17
            else "ns"
        )
    try:
        if type(raw) is int:
            micros = raw * 1_000_000 // _UNIT_DIVISORS[unit]
            return _EPOCH + timedelta(microseconds=micros)
        return _EPOCH + timedelta(seconds=raw / _UNIT_DIVISORS[unit])
    except OverflowError:
        raise BadField(BAD_TIME, f"time {raw!r} is out of range") from None


def _short(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= 40 else text[:37] + "..."


class Decoder:
    """Reads one mapping's payloads. Subclasses implement `_extract`."""

    def __init__(self, mapping: MappingSettings, limits: Limits) -> None:
        self.mapping = mapping
        self.name = mapping.name
        self._limits = limits
        self._zone = ZoneInfo(mapping.time_zone)
        self._rename = mapping.rename
        self._convert = {m: CONVERSIONS[c] for m, c in mapping.convert.items()}
        self._checked_devices: set[str] = set()
        self._checked_metrics: set[str] = set()
        self._getters: dict[str, Callable[[Any], Any]] = {}

    def decode(self, payload: bytes, captured: dict[str, str], received_at: datetime) -> Decoded:
        out = Decoded()
        try:
            self._extract(payload, captured, received_at, out)
        except BadField as exc:
            out.problem(exc.reason, exc.detail)
        except Exception as exc:  # the promise: nothing a payload does escapes the decoder
            out.problem(MALFORMED, f"{type(exc).__name__}: {exc}"[:200])
        readings = out.readings
        # distinct metrics cannot collide: the common case costs one small set
        if len(readings) > 1 and len({m for _, _, m, _ in readings}) != len(readings):
            _drop_collisions(out)
        return out

    def _extract(
        self, payload: bytes, captured: dict[str, str], received_at: datetime, out: Decoded
    ) -> None:
        raise NotImplementedError

    def _field(self, spec: str, captured: dict[str, str], doc: Any, what: str) -> str:
        """A device id or metric name from {topic segment}, $.path or a literal."""
        if spec.startswith("{"):
            return captured[spec[1:-1]]
        if spec.startswith("$"):
            get = self._getters.get(spec)
            if get is None:
                get = self._getters[spec] = compile_path(spec)
            value = get(doc)
            if value is _MISSING:
                raise BadField(MISSING_FIELD, f"{what} {spec} not in payload")
            if type(value) is int:
                return str(value)
            if type(value) is not str:
                raise BadField(
                    BAD_DEVICE if what == "device" else BAD_METRIC,
                    f"{what} {spec} is {_short(value)}, not a string",
                )
            return value
        return spec

    def _add(
        self,
        out: Decoded,
        time: datetime,
        device: str,
        metric: str,
        raw: Any,
        received_at: datetime,
        renamed: bool = False,
    ) -> None:
        """Validate and append one reading, or record why not (other readings still count)."""
        try:
            value = to_value(raw)
        except BadField as exc:
            out.problem(exc.reason, f"{device}/{metric}: {exc.detail}")
            return
        if not renamed:
            metric = self._rename.get(metric, metric)
        if metric not in self._checked_metrics:
            if not METRIC.fullmatch(metric):
                out.problem(BAD_METRIC, f"metric {_short(metric)} is not a valid metric name")
                return
            if len(self._checked_metrics) < 100_000:
                self._checked_metrics.add(metric)
        if device not in self._checked_devices:
            if not DEVICE_ID.fullmatch(device):
                out.problem(BAD_DEVICE, f"device id {_short(device)} is not valid")
                return
            if len(self._checked_devices) < 100_000:
                self._checked_devices.add(device)
        if not (
            received_at - self._limits.max_past <= time <= received_at + self._limits.max_future
        ):
            out.problem(
                TIME_RANGE,
                f"{device}/{metric}: time {time.isoformat()} is too far from "
                f"the receive time {received_at.isoformat()}",
            )
            return
        conversion = self._convert.get(metric)
        if conversion is not None:
            value = value * conversion[0] + conversion[1]
        out.readings.append((time, device, metric, value))


class NumberDecoder(Decoder):
    """The payload is one number; device and metric come from the topic (or are literals)."""

    def _extract(
        self, payload: bytes, captured: dict[str, str], received_at: datetime, out: Decoded
    ) -> None:
        try:
            text = payload.decode("ascii").strip()
        except UnicodeDecodeError:
            raise BadField(MALFORMED, "payload is not a number (not ASCII text)") from None
        if not text:
            raise BadField(MALFORMED, "payload is empty")
        if not (text[0].isdigit() or text[0] in "+-."):
            raise BadField(MALFORMED, f"payload {text[:40]!r} is not a number")
        device = self._field(self.mapping.device, captured, None, "device")
        metric = self._field(self.mapping.metric or "", captured, None, "metric")
        self._add(out, received_at, device, metric, text, received_at)


class JsonDecoder(Decoder):
    """JSON objects (or an array of them): fixed metric paths, a {metric: value} object, or an
    array of records each with its metric, value and optional time."""

    def __init__(self, mapping: MappingSettings, limits: Limits) -> None:
        super().__init__(mapping, limits)
        self._time = compile_path(mapping.time) if mapping.time else None
        self._metrics = [(name, compile_path(p), p) for name, p in mapping.metrics.items()]
        self._values = compile_path(mapping.values) if mapping.values else None
        self._records = compile_path(mapping.records) if mapping.records else None
        self._record_metric = compile_path(mapping.record_metric)
        self._record_value = compile_path(mapping.record_value)
        self._record_time = compile_path(mapping.record_time) if mapping.record_time else None

    def _extract(
        self, payload: bytes, captured: dict[str, str], received_at: datetime, out: Decoded
    ) -> None:
        doc = _json(payload)
        for item in doc if type(doc) is list else (doc,):
            if type(item) is not dict:
                raise BadField(MALFORMED, f"expected a JSON object, got {type(item).__name__}")
            self._object(item, captured, received_at, out)

    def _object(
        self, doc: dict[str, Any], captured: dict[str, str], received_at: datetime, out: Decoded
    ) -> None:
        device = self._field(self.mapping.device, captured, doc, "device")
        when = received_at
        if self._time is not None:
            raw_time = self._time(doc)
            if raw_time is not _MISSING and raw_time is not None:
                when = to_time(raw_time, self.mapping.time_unit, self._zone)
        if self._metrics:
            for name, get, path in self._metrics:
                raw = get(doc)
                if raw is _MISSING:
                    out.problem(MISSING_FIELD, f"{device}/{name}: {path} not in payload")
                else:
                    self._add(out, when, device, name, raw, received_at)
        elif self._values is not None:
            values = self._values(doc)
            if type(values) is not dict:
                raise BadField(MISSING_FIELD, f"{self.mapping.values} is not an object of values")
            for name, raw in values.items():
                self._add(out, when, device, name, raw, received_at)
        elif self._records is not None:
            records = self._records(doc)
            if type(records) is not list:
                raise BadField(MISSING_FIELD, f"{self.mapping.records} is not an array of records")
            for record in records:
                self._record(record, device, when, received_at, out)

    def _record(
        self, record: Any, device: str, when: datetime, received_at: datetime, out: Decoded
    ) -> None:
        name = self._record_metric(record)
        raw = self._record_value(record)
        if type(name) is not str or raw is _MISSING:
            out.problem(MISSING_FIELD, f"{device}: record {_short(record)} lacks metric or value")
            return
        if self._record_time is not None:
            raw_time = self._record_time(record)
            if raw_time is not _MISSING and raw_time is not None:
                try:
                    when = to_time(raw_time, self.mapping.time_unit, self._zone)
                except BadField as exc:
                    out.problem(exc.reason, f"{device}/{name}: {exc.detail}")
                    return
        self._add(out, when, device, name, raw, received_at)


class SenmlDecoder(Decoder):
    """SenML JSON (RFC 8428), resolved as section 4.6 says: name = base name + name, time = base
    time + time (relative to the receive time below 2**28), value = base value + value, sum =
    base sum + sum, unit = unit or base unit. A record's metric is its own name, or its unit when
    it has none (a tracker's `%RH`, `lat` and `lon` under one base name are three metrics); a sum
    is stored as the metric + `_sum`. The device is the topic's, or with `device = "$bn"` the base
    name (without a trailing `:`, `/` or `.`), or the whole name when the record names only a
    device. String and data values (`vs`, `vd`) are not readings and are skipped."""

    def _extract(
        self, payload: bytes, captured: dict[str, str], received_at: datetime, out: Decoded
    ) -> None:
        pack = _json(payload)
        if type(pack) is not list:
            raise BadField(MALFORMED, "SenML payload must be a JSON array of records")
        from_base = self.mapping.device == "$bn"
        device = "" if from_base else self._field(self.mapping.device, captured, None, "device")
        rename = self._rename
        base_name, base_unit, base_time, base_value = "", "", 0.0, 0.0
        base_sum: float | None = None
        version: int | None = None
        for record in pack:
            if type(record) is not dict:
                raise BadField(MALFORMED, f"SenML record {_short(record)} is not an object")
            if not _SENML_LABELS.issuperset(record):
                for key in record:
                    if key[-1:] == "_":  # RFC 8428 4.4: a field that must be understood
                        _refuse(out, f"SenML field {_short(key)} is not one Pantau understands")
            if "bver" in record:
                found = record["bver"]
                if type(found) is not int or found < 1:
                    _refuse(out, f"SenML bver {_short(found)} is not a positive integer")
                if found > _SENML_VERSION:
                    _refuse(
                        out,
                        f"SenML version {found} is newer than {_SENML_VERSION}, "
                        "the version Pantau reads (RFC 8428)",
                    )
                if version is not None and found != version:
                    _refuse(out, f"SenML records of one pack have versions {version} and {found}")
                version = found
            if "bn" in record:
                base_name = _senml_str(record["bn"], "bn")
            if "bt" in record:
                base_time = _senml_num(record["bt"], "bt")
            if "bu" in record:
                base_unit = _senml_str(record["bu"], "bu")
            if "bv" in record:
                base_value = _senml_num(record["bv"], "bv")
            if "bs" in record:
                base_sum = _senml_num(record["bs"], "bs")
            try:
                raw: Any = None
                if "v" in record:
                    raw = _senml_num(record["v"], "v") + base_value
                elif "vb" in record:
                    raw = record["vb"]
                    if type(raw) is not bool:
                        out.problem(BAD_VALUE, f"SenML vb {_short(raw)} is not a boolean")
                        continue
                total = None
                if "s" in record:
                    total = _senml_num(record["s"], "s") + (base_sum or 0.0)
                elif base_sum is not None:
                    total = base_sum
                if raw is None and total is None:
                    continue  # a base-only record, or a string or data value
                name = _senml_str(record["n"], "n") if "n" in record else ""
                unit = _senml_str(record["u"], "u") if "u" in record else base_unit
                t = base_time + _senml_num(record["t"], "t") if "t" in record else base_time
                if t >= _SENML_RELATIVE:
                    when = to_time(t, "s", UTC)
                else:
                    try:
                        when = received_at + timedelta(seconds=t)
                    except OverflowError:
                        raise BadField(BAD_TIME, f"relative time {t!r} is out of range") from None
                if from_base:
                    if base_name and name:
                        device_id, metric = base_name.rstrip(":/."), name
                    else:  # the record names only a device: the whole name is the device
                        device_id, metric = (base_name or name).rstrip(":/."), unit
                else:
                    device_id, metric = device, name or unit
                if not device_id or not metric:
                    out.problem(
                        MISSING_FIELD,
                        f"SenML record {_short(record)} has "
                        + ("no name" if not device_id else "no name of its own and no unit"),
                    )
                    continue
                metric = rename.get(metric, metric)
                if raw is not None:
                    self._add(out, when, device_id, metric, raw, received_at, True)
                if total is not None:
                    sum_metric = metric + "_sum"
                    metric = rename.get(sum_metric, sum_metric)
                    self._add(out, when, device_id, metric, total, received_at, True)
            except BadField as exc:  # this record only: the base fields carry on
                out.problem(exc.reason, f"SenML record {_short(record)}: {exc.detail}")


class StatusDecoder(Decoder):
    """A status or last-will message: `online`/`offline` (or `{"status": "offline"}` with
    `path`), matched case-insensitively against the mapping's value lists. It yields a status,
    never a reading; a value in neither list is a broken status payload (BAD_STATUS). An empty
    payload (a retained status being cleared) says nothing and yields nothing."""

    def __init__(self, mapping: MappingSettings, limits: Limits) -> None:
        super().__init__(mapping, limits)
        self._path = compile_path(mapping.path) if mapping.path else None
        self._online = frozenset(mapping.online)
        self._offline = frozenset(mapping.offline)

    def _extract(
        self, payload: bytes, captured: dict[str, str], received_at: datetime, out: Decoded
    ) -> None:
        if not payload.strip():
            return
        doc: Any = None
        if self._path is not None:
            doc = _json(payload)
            raw = self._path(doc)
            if raw is _MISSING:
                raise BadField(MISSING_FIELD, f"status {self.mapping.path} not in payload")
        else:
            try:
                raw = payload.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise BadField(BAD_STATUS, "status payload is not UTF-8 text") from None
            if not raw:
                return
            if raw[:1] == '"':  # a JSON string: "offline"
                with contextlib.suppress(orjson.JSONDecodeError):
                    raw = orjson.loads(raw)
        value = _status_text(raw)
        device = self._field(self.mapping.device, captured, doc, "device")
        if not DEVICE_ID.fullmatch(device):
            raise BadField(BAD_DEVICE, f"device id {_short(device)} is not valid")
        if value in self._online:
            out.status = (device, True, None)
        elif value in self._offline:
            out.status = (device, False, self.mapping.cause)
        else:
            raise BadField(
                BAD_STATUS,
                f"{device}: status {_short(raw)} is neither online "
                f"({', '.join(self.mapping.online)}) nor offline "
                f"({', '.join(self.mapping.offline)})",
            )


def _status_text(raw: Any) -> str | None:
    """A status value as the text it is matched by: strings folded, true/false, integers."""
    kind = type(raw)
    if kind is str:
        return str(raw).strip().casefold()
    if kind is bool:
        return "true" if raw else "false"
    if kind is int or (kind is float and math.isfinite(raw) and raw.is_integer()):
        return str(int(raw))
    return None  # null, an object, an array, a fraction: in no list


def _drop_collisions(out: Decoded) -> None:
    """One message, one value per (device, metric, time): a repeat of the same value is kept
    once; different values are a conflict, none of them is written and the message goes to
    quarantine naming the key and the values (the writer would keep whichever came first)."""
    values: dict[tuple[datetime, str, str], list[float]] = {}
    for t, device, metric, value in out.readings:
        values.setdefault((t, device, metric), []).append(value)
    if len(values) == len(out.readings):
        return
    kept: list[Reading] = []
    for (t, device, metric), found in values.items():
        distinct = list(dict.fromkeys(found))
        if len(distinct) == 1:
            kept.append((t, device, metric, found[0]))
            continue
        shown = " and ".join(repr(v) for v in distinct[:3])
        more = f" and {len(distinct) - 3} more" if len(distinct) > 3 else ""
        out.problem(
            CONFLICTING,
            f"{device}/{metric} at {t.isoformat()}: values {shown}{more} in one message",
        )
    out.readings = kept


def _refuse(out: Decoded, detail: str) -> NoReturn:
    """The whole pack is not used (RFC 8428 4.4): no reading of it is written."""
    out.readings.clear()
    raise BadField(MALFORMED, detail)


def _json(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise BadField(MALFORMED, f"payload is not JSON: {exc}") from None


def _senml_num(raw: Any, key: str) -> float:
    if type(raw) in (int, float) and math.isfinite(raw):
        return float(raw)
    raise BadField(
        BAD_TIME if key in ("t", "bt") else BAD_VALUE, f"SenML {key} {_short(raw)} is not a number"
    )


def _senml_str(raw: Any, key: str) -> str:
    if type(raw) is str:
        return raw
    raise BadField(MALFORMED, f"SenML {key} {_short(raw)} is not a string")


DECODERS: dict[str, type[Decoder]] = {
    "number": NumberDecoder,
    "json": JsonDecoder,
    "senml": SenmlDecoder,
    "status": StatusDecoder,
}


def build_decoder(mapping: MappingSettings, limits: Limits) -> Decoder:
    return DECODERS[mapping.format](mapping, limits)
