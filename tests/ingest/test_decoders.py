import json
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.decoders import (
    BAD_DEVICE,
    BAD_TIME,
    BAD_VALUE,
    MALFORMED,
    MISSING_FIELD,
    TIME_RANGE,
    Decoded,
    Limits,
    build_decoder,
    to_time,
)
from pantau.mappings import MappingSettings

NOW = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)  # 10:00 WIB
LIMITS = Limits(max_future=timedelta(minutes=5), max_past=timedelta(days=7))


def decode(mapping: MappingSettings, payload: bytes | str, **captured: str) -> Decoded:
    data = payload.encode() if isinstance(payload, str) else payload
    return build_decoder(mapping, LIMITS).decode(data, captured, NOW)


NUMBER = MappingSettings(name="n", topic="bekasi/{kecamatan}/{device}/{metric}", format="number")
JSON_VALUES = MappingSettings(
    name="j", topic="j/{device}", format="json", time="$.ts", values="$.readings"
)
SENML = MappingSettings(name="s", topic="s/{device}", format="senml")


# --- bare numbers ----------------------------------------------------------------------------


def test_number_from_topic_at_receive_time() -> None:
    out = decode(NUMBER, " 12.5\n", device="wl-setu-01", metric="water_level_cm", kecamatan="setu")
    assert out.readings == [(NOW, "wl-setu-01", "water_level_cm", 12.5)]
    assert out.problems == []


@pytest.mark.parametrize("payload", ["abc", "", "12,5", "nan", "1e999", b"\xff\xfe"])
def test_number_garbage_is_a_problem(payload: str | bytes) -> None:
    out = decode(NUMBER, payload, device="wl-setu-01", metric="level", kecamatan="setu")
    assert out.readings == []
    assert out.problems[0].reason in (MALFORMED, BAD_VALUE)


def test_number_with_literal_metric_and_conversion() -> None:
    mapping = MappingSettings(
        name="lvl",
        topic="sungai/{device}",
        format="number",
        metric="water_level_cm",
        convert={"water_level_cm": "m->cm"},
    )
    out = decode(mapping, "1.25", device="wl-1")
    assert out.readings == [(NOW, "wl-1", "water_level_cm", 125.0)]


def test_invalid_device_id_from_topic() -> None:
    out = decode(NUMBER, "1", device="bad device!", metric="x", kecamatan="k")
    assert out.problems[0].reason == BAD_DEVICE


# --- JSON ------------------------------------------------------------------------------------


def test_json_values_object_with_epoch_ms() -> None:
    ts = int((NOW - timedelta(seconds=30)).timestamp() * 1000)
    payload = orjson.dumps({"ts": ts, "readings": {"pm25": 41, "pm10": "63.5", "on": True}})
    out = decode(JSON_VALUES, payload, device="aq-1")
    when = NOW - timedelta(seconds=30)
    assert out.readings == [
        (when, "aq-1", "pm25", 41.0),
        (when, "aq-1", "pm10", 63.5),
        (when, "aq-1", "on", 1.0),
    ]


def test_json_nested_metric_paths_device_from_payload_and_local_time() -> None:
    mapping = MappingSettings(
        name="vendor-x",
        topic="vendorx/data",
        format="json",
        device="$.meta.id",
        time="$.meta.time",
        time_zone="Asia/Jakarta",
        metrics={"water_level_cm": "$.sensors[0].level", "battery_v": "$.power.v"},
        convert={"water_level_cm": "m->cm"},
    )
    payload = {
        "meta": {"id": "wl-babelan-07", "time": "2026-11-24 09:59:30"},
        "sensors": [{"level": 1.5}],
        "power": {"v": 3.7},
    }
    out = decode(mapping, orjson.dumps(payload))
    when = datetime(2026, 11, 24, 2, 59, 30, tzinfo=UTC)  # 09:59:30 WIB
    assert [(r[0].astimezone(UTC), *r[1:]) for r in out.readings] == [
        (when, "wl-babelan-07", "water_level_cm", 150.0),
        (when, "wl-babelan-07", "battery_v", 3.7),
    ]


def test_json_missing_field_keeps_the_rest() -> None:
    mapping = MappingSettings(
        name="m", topic="m/{device}", format="json", metrics={"a": "$.a", "b": "$.b"}
    )
    out = decode(mapping, '{"a": 1}', device="d1")
    assert out.readings == [(NOW, "d1", "a", 1.0)]
    assert out.problems[0].reason == MISSING_FIELD


def test_json_records_with_their_own_times_and_names() -> None:
    mapping = MappingSettings(
        name="r",
        topic="gw/{device}",
        format="json",
        records="$.data",
        record_metric="$.name",
        record_value="$.val",
        record_time="$.t",
        rename={"temp": "air_temperature_c"},
        convert={"air_temperature_c": "F->C"},
    )
    t1 = NOW - timedelta(minutes=2)
    payload = {
        "data": [
            {"name": "temp", "val": 212, "t": t1.isoformat()},
            {"name": "rh", "val": "70", "t": int(NOW.timestamp())},
        ]
    }
    out = decode(mapping, orjson.dumps(payload), device="ws-1")
    assert out.readings == [(t1, "ws-1", "air_temperature_c", 100.0), (NOW, "ws-1", "rh", 70.0)]


def test_json_array_of_objects_from_a_gateway() -> None:
    mapping = MappingSettings(
        name="g", topic="gw", format="json", device="$.id", metrics={"level": "$.level"}
    )
    out = decode(mapping, '[{"id": "a1", "level": 1}, {"id": "a2", "level": 2}]')
    assert [(r[1], r[3]) for r in out.readings] == [("a1", 1.0), ("a2", 2.0)]


@pytest.mark.parametrize(
    ("ts", "reason"),
    [
        ("yesterday", BAD_TIME),
        (int((NOW + timedelta(hours=1)).timestamp()), TIME_RANGE),
        (int((NOW - timedelta(days=30)).timestamp() * 1000), TIME_RANGE),
        ("2026-13-01T00:00:00Z", BAD_TIME),
        (1e300, BAD_TIME),
    ],
)
def test_json_bad_times_go_to_quarantine(ts: object, reason: str) -> None:
    out = decode(JSON_VALUES, orjson.dumps({"ts": ts, "readings": {"x": 1}}), device="d")
    assert out.readings == []
    assert out.problems[0].reason == reason


def test_json_not_json() -> None:
    out = decode(JSON_VALUES, b"{not json", device="d")
    assert out.problems[0].reason == MALFORMED


@pytest.mark.parametrize(
    ("raw", "unit", "expected"),
    [
        (1764000000, "auto", datetime(2025, 11, 24, 16, 0, tzinfo=UTC)),
        (1764000000123, "auto", datetime(2025, 11, 24, 16, 0, 0, 123000, tzinfo=UTC)),
        (1764000000123456, "auto", datetime(2025, 11, 24, 16, 0, 0, 123456, tzinfo=UTC)),
        (1764000000123456789, "auto", datetime(2025, 11, 24, 16, 0, 0, 123456, tzinfo=UTC)),
        ("1764000000.5", "auto", datetime(2025, 11, 24, 16, 0, 0, 500000, tzinfo=UTC)),
        (1764000000, "ms", datetime(1970, 1, 21, 10, 0, 0, tzinfo=UTC)),
        ("2025-11-24T23:00:00+07:00", "auto", datetime(2025, 11, 24, 16, 0, tzinfo=UTC)),
        ("2025-11-24T16:00:00Z", "auto", datetime(2025, 11, 24, 16, 0, tzinfo=UTC)),
    ],
)
def test_time_units(raw: object, unit: str, expected: datetime) -> None:
    assert to_time(raw, unit, UTC) == expected


# --- SenML -----------------------------------------------------------------------------------


def test_senml_base_values_and_relative_times() -> None:
    bt = NOW.timestamp() - 60
    pack = [
        {"bn": "urn:dev:ow:10e2073a01080063:", "bt": bt, "bu": "Cel", "n": "temp", "v": 27.5},
        {"n": "temp", "t": 30, "v": 28.0},
        {"n": "door", "vb": True},
        {"n": "fw", "vs": "1.2.3"},
    ]
    from_topic = decode(SENML, orjson.dumps(pack), device="ws-cibitung-01")
    assert from_topic.problems == []
    assert [(r[0], r[2], r[3]) for r in from_topic.readings] == [
        (NOW - timedelta(seconds=60), "temp", 27.5),
        (NOW - timedelta(seconds=30), "temp", 28.0),
        (NOW - timedelta(seconds=60), "door", 1.0),
    ]
    assert {r[1] for r in from_topic.readings} == {"ws-cibitung-01"}
    by_name = MappingSettings(name="s2", topic="s2", format="senml", device="$bn")
    out = decode(by_name, orjson.dumps(pack))
    assert {r[1] for r in out.readings} == {"urn:dev:ow:10e2073a01080063"}


def test_senml_times_relative_to_now() -> None:
    out = decode(SENML, orjson.dumps([{"n": "x", "v": 1, "t": -10}]), device="d")
    assert out.readings == [(NOW - timedelta(seconds=10), "d", "x", 1.0)]


@pytest.mark.parametrize(
    "payload", ['{"n": "x"}', '[{"n": "x", "v": "12"}]', "[1, 2]", '[{"bn": 5, "v": 1}]']
)
def test_senml_invalid(payload: str) -> None:
    out = decode(SENML, payload, device="d")
    assert out.readings == []
    assert out.problems


# --- properties ------------------------------------------------------------------------------

JSON_RECORDS = MappingSettings(
    name="rec", topic="r/{device}", format="json", records="$.data", record_time="$.t"
)
ALL = [NUMBER, JSON_VALUES, SENML, JSON_RECORDS]
CAPTURED = {"device": "dev-1", "metric": "m", "kecamatan": "setu"}


@settings(max_examples=300)
@given(payload=st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(payload: bytes) -> None:
    for mapping in ALL:
        out = build_decoder(mapping, LIMITS).decode(payload, CAPTURED, NOW)
        assert isinstance(out, Decoded)
        for _t, _device, _metric, value in out.readings:
            assert isinstance(value, float)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300)
@given(doc=json_values)
def test_arbitrary_json_never_raises(doc: object) -> None:
    payload = json.dumps(doc).encode()  # big integers and NaN included
    for mapping in ALL:
        assert isinstance(build_decoder(mapping, LIMITS).decode(payload, CAPTURED, NOW), Decoded)


device_ids = st.from_regex(r"\A[a-z][a-z0-9-]{0,20}\Z")
metric_names = st.from_regex(r"\A[a-z][a-z0-9_]{0,20}\Z")
values = st.floats(allow_nan=False, allow_infinity=False, width=64)
offsets_ms = st.integers(min_value=-6 * 86_400_000, max_value=4 * 60_000)


@given(
    device=device_ids,
    metrics=st.dictionaries(metric_names, values, min_size=1, max_size=8),
    offset=offsets_ms,
)
def test_json_round_trip(device: str, metrics: dict[str, float], offset: int) -> None:
    ts = int(NOW.timestamp() * 1000) + offset
    out = decode(JSON_VALUES, orjson.dumps({"ts": ts, "readings": metrics}), device=device)
    when = datetime.fromtimestamp(ts / 1000, UTC)
    assert out.problems == []
    assert out.readings == [(when, device, m, v) for m, v in metrics.items()]


@given(device=device_ids, metric=metric_names, value=values)
def test_number_round_trip(device: str, metric: str, value: float) -> None:
    out = decode(NUMBER, repr(value), device=device, metric=metric, kecamatan="k")
    assert out.readings == [(NOW, device, metric, value)]


@given(
    device=device_ids,
    metrics=st.dictionaries(metric_names, values, min_size=1, max_size=8),
    offset=offsets_ms,
)
def test_senml_round_trip(device: str, metrics: dict[str, float], offset: int) -> None:
    bt = NOW.timestamp() + offset / 1000
    pack = [{"n": m, "v": v} for m, v in metrics.items()]
    pack[0]["bt"] = bt
    out = decode(SENML, orjson.dumps(pack), device=device)
    assert out.problems == []
    assert [(r[1], r[2], r[3]) for r in out.readings] == [
        (device, m, v) for m, v in metrics.items()
    ]
    for reading in out.readings:
        assert abs(reading[0].timestamp() - bt) < 1e-3


@given(offset=offsets_ms, hours=st.integers(min_value=-12, max_value=14))
def test_iso_times_with_offsets_round_trip(offset: int, hours: int) -> None:
    when = (NOW + timedelta(milliseconds=offset)).astimezone(timezone(timedelta(hours=hours)))
    payload = orjson.dumps({"ts": when.isoformat(), "readings": {"x": 1}})
    out = decode(JSON_VALUES, payload, device="d")
    assert out.readings[0][0] == when
