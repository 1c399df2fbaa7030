"""Device ids and metric names are matched whole: a trailing newline is never part of one."""

from datetime import UTC, datetime

import orjson
import pytest
from pydantic import BaseModel, Field, ValidationError

from devices.models import DeviceIn
from ingest.decoders import BAD_DEVICE, BAD_METRIC, Limits, build_decoder
from pantau.ids import (
    DEVICE_ID,
    DEVICE_ID_PATTERN,
    METRIC,
    METRIC_PATTERN,
    is_device_id,
    is_metric,
)
from pantau.mappings import MappingSettings

NOW = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
ENDINGS = ["\n", "\r\n", "\n\n", " ", "\x00"]


@pytest.mark.parametrize("ending", ENDINGS)
def test_patterns_refuse_a_trailing_newline(ending: str) -> None:
    assert is_device_id("wl-setu-01")
    assert is_metric("pm25")
    assert not is_device_id("wl-setu-01" + ending)
    assert not is_metric("pm25" + ending)
    # whichever method a caller picks, the compiled patterns are anchored at the very end
    for method in ("match", "fullmatch", "search"):
        assert getattr(DEVICE_ID, method)("wl-setu-01" + ending) is None
        assert getattr(METRIC, method)("pm25" + ending) is None


@pytest.mark.parametrize("ending", ENDINGS)
def test_pydantic_patterns_refuse_a_trailing_newline(ending: str) -> None:
    class Ids(BaseModel):
        device_id: str = Field(pattern=DEVICE_ID_PATTERN)
        metric: str = Field(pattern=METRIC_PATTERN)

    assert Ids(device_id="wl-setu-01", metric="pm25")
    with pytest.raises(ValidationError, match="device_id"):
        Ids(device_id="wl-setu-01" + ending, metric="pm25")
    with pytest.raises(ValidationError, match="metric"):
        Ids(device_id="wl-setu-01", metric="pm25" + ending)


def test_registry_never_stores_an_id_with_a_newline() -> None:
    """An id is matched whole, as the schema's pattern says (the phone page and the file
    readers trim what a keyboard or a cell adds): `x\\n` is refused, never stored."""
    with pytest.raises(ValidationError, match="device_id"):
        DeviceIn(device_id="wl-setu-01\n", name="x", device_type="t", kecamatan="k")
    with pytest.raises(ValidationError, match="device_id"):
        DeviceIn(device_id="wl-setu\n01", name="x", device_type="t", kecamatan="k")


def decode(mapping: MappingSettings, payload: bytes, **captured: str) -> tuple[list, list]:  # type: ignore[type-arg]
    out = build_decoder(mapping, Limits()).decode(payload, captured, NOW)
    return out.readings, [p.reason for p in out.problems]


def test_decoders_refuse_a_trailing_newline_in_a_device_or_metric() -> None:
    number = MappingSettings(name="n", topic="b/{device}/{metric}", format="number")
    assert decode(number, b"1", device="wl-1\n", metric="pm25") == ([], [BAD_DEVICE])
    assert decode(number, b"1", device="wl-1", metric="pm25\n") == ([], [BAD_METRIC])

    json_values = MappingSettings(
        name="j", topic="j", format="json", device="$.id", values="$.readings"
    )
    payload = orjson.dumps({"id": "aq-1\n", "readings": {"pm25": 1}})
    assert decode(json_values, payload) == ([], [BAD_DEVICE])
    payload = orjson.dumps({"id": "aq-1", "readings": {"pm25\n": 1, "pm10": 2}})
    readings, reasons = decode(json_values, payload)
    assert [r[2] for r in readings] == ["pm10"]
    assert reasons == [BAD_METRIC]

    senml = MappingSettings(name="s", topic="s", format="senml", device="$bn")
    payload = orjson.dumps([{"bn": "dev-1\n:", "n": "pm25", "v": 1}])
    assert decode(senml, payload) == ([], [BAD_DEVICE])
    payload = orjson.dumps([{"bn": "dev-1:", "n": "pm25\n", "v": 1}])
    assert decode(senml, payload) == ([], [BAD_METRIC])


def test_mappings_refuse_a_trailing_newline_in_names_and_topics() -> None:
    with pytest.raises(ValidationError, match=r"rename.pm: 'pm25\\n' is not a metric name"):
        MappingSettings(
            name="j", topic="j/{device}", format="json", values="$.r", rename={"pm": "pm25\n"}
        )
    with pytest.raises(ValidationError, match="is not a metric name"):
        MappingSettings(name="n", topic="n/{device}", format="number", metric="level\n")
    with pytest.raises(ValidationError, match="is not a device id"):
        MappingSettings(name="n", topic="n/{metric}", format="number", device="wl-1\n")
    with pytest.raises(ValidationError, match="expected a topic pattern"):
        MappingSettings(name="n", topic="n/{device}\n/{metric}", format="number")
