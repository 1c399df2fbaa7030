"""JSON paths in mappings: bracket notation reaches any key a vendor uses."""

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from ingest.decoders import _MISSING, Decoded, Limits, build_decoder, compile_path
from pantau.mappings import MappingSettings, format_path, parse_path

NOW = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)


def decode(mapping: MappingSettings, doc: object, **captured: str) -> Decoded:
    return build_decoder(mapping, Limits()).decode(orjson.dumps(doc), captured, NOW)


@pytest.mark.parametrize(
    ("path", "steps"),
    [
        ("$", ()),
        ("$.a.b[0]", ("a", "b", 0)),
        ("$.data['sensor:1'].value", ("data", "sensor:1", "value")),
        ('$["PM2.5"]', ("PM2.5",)),
        ('$["a b"][0]', ("a b", 0)),
        ("$['Suhu Udara']", ("Suhu Udara",)),
        ("$[ 'spaced' ][ 2 ]", ("spaced", 2)),
        ("$.list[-1]", ("list", -1)),
        (r"$['it\'s']", ("it's",)),
        (r'$["say \"hi\""]', ('say "hi"',)),
        (r"$['back\\slash']", ("back\\slash",)),
        (r'$["\u00e9\n\t\/"]', ("é\n\t/",)),
        (r'$["\ud83d\ude00"]', ("\U0001f600",)),
        ("$['']", ("",)),
        ("$['a]b']", ("a]b",)),
        ("$.kelembaban_%", None),
    ],
)
def test_parse_path(path: str, steps: tuple[object, ...] | None) -> None:
    if steps is None:
        with pytest.raises(ValueError, match="expected"):
            parse_path(path)
    else:
        assert parse_path(path) == steps


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("a.b", "must start with \\$"),
        ("$.", "at character 3, expected a key"),
        ("$[", "at character 3, expected an array index or a quoted key"),
        ("$['a", "no closing '"),
        ('$["a"', "at character 6, expected \\]"),
        ("$[x]", "expected an array index or a quoted key"),
        ("$[1.5]", "expected \\]"),
        ("$.a b", "expected . or \\[ but found ' '"),
        ("$..a", "recursive descent"),
        ("$.*", "wildcards"),
        ("$[*]", "expected an array index"),
        (r"$['\q']", "unknown escape"),
        (r"$['\u12']", "4 hex digits"),
    ],
)
def test_bad_paths_say_what_was_expected(path: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_path(path)


FIELDS = ["time", "values", "records", "record_metric", "record_value", "record_time", "device"]


@pytest.mark.parametrize("field", [*FIELDS, "metrics"])
def test_every_path_field_of_a_mapping_is_checked(field: str) -> None:
    shape: dict[str, object] = {"values": "$.v"}
    if field == "metrics":
        shape = {"metrics": {"pm25": "$['PM2.5"}}
    elif field in ("records", "record_metric", "record_value", "record_time"):
        shape = {"records": "$.r", field: "$['PM2.5"}
    elif field == "values":
        shape = {"values": "$['PM2.5"}
    else:
        shape[field] = "$['PM2.5"
    with pytest.raises(ValidationError) as caught:
        MappingSettings(name="m", topic="m/{device}", format="json", **shape)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "expected a JSON path such as" in message
    assert "no closing '" in message
    assert ("metrics.pm25" if field == "metrics" else f"{field} = ") in message


def test_bracket_keys_in_every_shape_of_json_mapping() -> None:
    fixed = MappingSettings(
        name="vendor",
        topic="v",
        format="json",
        device='$["device id"]',
        time="$.meta['waktu:utc']",
        metrics={
            "pm25": "$.data['sensor:1'].value",
            "pm10": '$["PM10"]',
            "air_temperature_c": '$["Suhu Udara"][0]',
            "rh": "$['a.b-c d']['x y']",
        },
    )
    doc = {
        "device id": "aq-bekasi-01",
        "meta": {"waktu:utc": NOW.isoformat()},
        "data": {"sensor:1": {"value": 41}},
        "PM10": 63.5,
        "Suhu Udara": [29.5, 30.0],
        "a.b-c d": {"x y": "70"},
    }
    out = decode(fixed, doc)
    assert out.problems == []
    assert out.readings == [
        (NOW, "aq-bekasi-01", "pm25", 41.0),
        (NOW, "aq-bekasi-01", "pm10", 63.5),
        (NOW, "aq-bekasi-01", "air_temperature_c", 29.5),
        (NOW, "aq-bekasi-01", "rh", 70.0),
    ]

    values = MappingSettings(
        name="vals",
        topic="w/{device}",
        format="json",
        time="$['ts ms']",
        values="$['Data Sensor']",
        rename={"PM2.5": "pm25", "Suhu Udara": "air_temperature_c"},
    )
    ts = int((NOW - timedelta(seconds=5)).timestamp() * 1000)
    out = decode(values, {"ts ms": ts, "Data Sensor": {"PM2.5": 12, "Suhu Udara": 30}}, device="d")
    assert [(r[2], r[3]) for r in out.readings] == [("pm25", 12.0), ("air_temperature_c", 30.0)]

    records = MappingSettings(
        name="recs",
        topic="g/{device}",
        format="json",
        records="$['data:list']",
        record_metric="$['nama sensor']",
        record_value="$['nilai']",
        record_time='$["t:s"]',
    )
    t = int(NOW.timestamp()) - 60
    doc = {"data:list": [{"nama sensor": "pm25", "nilai": 9, "t:s": t}]}
    out = decode(records, doc, device="d")
    assert out.readings == [(NOW - timedelta(seconds=60), "d", "pm25", 9.0)]


def test_a_missing_bracketed_key_is_a_missing_field() -> None:
    mapping = MappingSettings(
        name="m", topic="m/{device}", format="json", metrics={"a": "$['x y']"}
    )
    out = decode(mapping, {"x": 1}, device="d")
    assert out.readings == []
    assert out.problems[0].reason == "missing_field"
    assert "$['x y']" in out.problems[0].detail


def test_an_index_does_not_reach_into_a_string_nor_a_key_into_an_array() -> None:
    assert compile_path("$.name[0]")({"name": "abc"}) is _MISSING
    assert compile_path("$.a.b")({"a": ["b"]}) is _MISSING
    assert compile_path("$[0]")({"0": 1}) is _MISSING
    assert compile_path("$['0']")({"0": 1}) == 1
    assert compile_path("$.a[-1]")({"a": [1, 2, 3]}) == 3
    assert compile_path("$.a[5]")({"a": [1]}) is _MISSING


# --- properties ------------------------------------------------------------------------------

steps = st.lists(st.text(max_size=12) | st.integers(min_value=-3, max_value=3), max_size=5)


def nest(path_steps: list[str | int], leaf: object) -> object:
    """A document in which `path_steps` lead to `leaf` (with a neighbour at every level)."""
    doc = leaf
    for step in reversed(path_steps):
        if isinstance(step, int):
            size = step + 1 if step >= 0 else -step
            items: list[object] = ["other"] * size
            items[step] = doc
            doc = items
        else:
            doc = {step + "\x00other": "other", step: doc}
    return doc


@given(key=st.text(), quote=st.sampled_from(["'", '"']))
def test_any_key_quoted_is_found(key: str, quote: str) -> None:
    path = format_path([key], quote)
    assert parse_path(path) == (key,)
    assert compile_path(path)({key: 42, key + "x": 0}) == 42


@given(path_steps=steps, quote=st.sampled_from(["'", '"']))
def test_any_path_round_trips(path_steps: list[str | int], quote: str) -> None:
    path = format_path(path_steps, quote)
    assert parse_path(path) == tuple(path_steps)
    assert compile_path(path)(nest(path_steps, {"leaf": True})) == {"leaf": True}


@given(key=st.text(min_size=1))
def test_any_key_through_a_mapping(key: str) -> None:
    mapping = MappingSettings(
        name="m", topic="m/{device}", format="json", metrics={"x": format_path(["data", key])}
    )
    out = decode(mapping, {"data": {key: 7}}, device="d")
    assert out.readings == [(NOW, "d", "x", 7.0)]
