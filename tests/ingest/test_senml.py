"""SenML as RFC 8428 resolves it: every JSON example of the RFC decodes to its resolved form.

The fixtures (fixtures/senml/rfc8428-*.json) carry each example pack as the RFC prints it (the
SensML stream of 5.1.2 with its nine records and the array closed; 5.1.4, the RFC's resolved form
of 5.1.3, also as a pack of its own) and its resolved records (RFC 8428 4.6: names concatenated,
times absolute, base unit and base value applied; relative times against `received_at`). Each
resolved record also keeps `_split`, the [base name, name] it was made of, since a resolved name
no longer says where the device ends. `device_choices` says which mappings the example allows:
a pack of two devices, or of one name whose records differ only by unit in the resolved form,
cannot be bound to the topic's one device without a collision.
"""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingest.decoders import (
    BAD_TIME,
    BAD_VALUE,
    CONFLICTING,
    MALFORMED,
    MISSING_FIELD,
    TIME_RANGE,
    Decoded,
    Limits,
    build_decoder,
)
from pantau.mappings import MappingSettings

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "senml").glob("rfc8428-*.json"))
EXAMPLES = {path.stem: json.loads(path.read_text()) for path in FIXTURES}
# The RFC's units that are not metric names; a mapping for such a sensor renames them.
RENAME = {"%RH": "humidity", "%EL": "battery_pct", "/": "ratio"}
TOPIC_DEVICE = "tracker-bekasi-01"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LIMITS = Limits(max_future=timedelta(minutes=5), max_past=timedelta(days=7))


def mapping(choice: str) -> MappingSettings:
    device = "$bn" if choice == "bn" else "{device}"
    return MappingSettings(
        name="s", topic="s/{device}", format="senml", device=device, rename=RENAME
    )


def decode(choice: str, pack: list[Any], received_at: datetime, **captured: str) -> Decoded:
    decoder = build_decoder(mapping(choice), LIMITS)
    return decoder.decode(orjson.dumps(pack), captured, received_at)


def expected_readings(example: dict[str, Any], choice: str) -> list[tuple[Any, ...]]:
    """The readings the resolved records stand for: numbers and booleans, sums as `_sum`."""
    out = []
    for record in example["resolved"]:
        base, own = record["_split"]
        unit = record.get("u", "")
        if choice == "topic":
            device, metric = TOPIC_DEVICE, own or unit
        elif base and own:
            device, metric = base.rstrip(":/."), own
        else:
            device, metric = (base or own).rstrip(":/."), unit
        metric = RENAME.get(metric, metric)
        when = EPOCH + timedelta(seconds=record["t"])
        if "v" in record:
            out.append((when, device, metric, float(record["v"])))
        if "vb" in record:
            out.append((when, device, metric, 1.0 if record["vb"] else 0.0))
        if "s" in record:
            out.append((when, device, metric + "_sum", float(record["s"])))
    return out


def received(example: dict[str, Any]) -> datetime:
    return EPOCH + timedelta(seconds=example["received_at"])


def test_the_fixtures_are_every_json_example_of_the_rfc() -> None:
    assert sorted(e["section"] for e in EXAMPLES.values()) == [
        "2-a",
        "2-b",
        "5.1.1",
        "5.1.2-a",
        "5.1.2-b",
        "5.1.2-c",
        "5.1.3",
        "5.1.4",
        "5.1.5",
        "5.1.6",
        "5.1.7-a",
        "5.1.7-b",
        "5.1.7-c",
    ]


CASES = [
    (name, choice) for name, example in EXAMPLES.items() for choice in example["device_choices"]
]


@pytest.mark.parametrize(("name", "choice"), CASES)
def test_rfc_example_decodes_to_its_resolved_form(name: str, choice: str) -> None:
    example = EXAMPLES[name]
    out = decode(choice, example["pack"], received(example), device=TOPIC_DEVICE)
    expected = expected_readings(example, choice)
    assert out.problems == []
    assert len(out.readings) == len(expected)
    assert sorted(out.readings) == sorted(expected)


def test_every_value_of_the_resolved_forms_is_counted() -> None:
    """All numeric values of every example, under each device choice it allows, and the two
    values the RFC gives as text and data (5.1.5), which readings (numbers) cannot hold."""
    decoded = {"topic": 0, "bn": 0}
    expected = {"topic": 0, "bn": 0}
    not_numbers = 0
    for example in EXAMPLES.values():
        not_numbers += sum("vs" in r or "vd" in r for r in example["resolved"])
        for choice in example["device_choices"]:
            out = decode(choice, example["pack"], received(example), device=TOPIC_DEVICE)
            decoded[choice] += len(out.readings)
            expected[choice] += len(expected_readings(example, choice))
    assert decoded == expected
    assert expected == {"topic": 64 - 13 - 4, "bn": 64}
    assert not_numbers == 2


@pytest.mark.parametrize("name", ["rfc8428-5.1.4", "rfc8428-5.1.6"])
def test_examples_that_cannot_take_the_topic_device_are_conflicts_not_silent(name: str) -> None:
    """5.1.6 has two devices, 5.1.4 one name for humidity, longitude and latitude: bound to the
    topic's one device their readings collide, and the message says so."""
    example = EXAMPLES[name]
    out = decode("topic", example["pack"], received(example), device=TOPIC_DEVICE)
    assert out.problems
    assert {p.reason for p in out.problems} == {CONFLICTING}
    for problem in out.problems:
        assert TOPIC_DEVICE in problem.detail
        assert " and " in problem.detail
    # what does not collide is kept: 5.1.4 has one value at t=150 alone (the battery)
    assert len(out.readings) == (1 if name.endswith("5.1.4") else 0)


# --- the rules one by one --------------------------------------------------------------------

NOW = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)


def run(pack: list[Any], choice: str = "topic", limits: Limits = LIMITS) -> Decoded:
    decoder = build_decoder(mapping(choice), limits)
    return decoder.decode(orjson.dumps(pack), {"device": "d-1"}, NOW)


def test_sums_are_their_own_metric_and_base_sum_applies() -> None:
    out = run(
        [
            {"bn": "meter-1:", "bs": 1000, "n": "energy", "u": "Wh", "v": 3, "s": 5},
            {"n": "energy", "t": -60, "s": 2},
            {"n": "flow", "u": "l", "v": 1.5},
        ],
        choice="bn",
    )
    assert out.problems == []
    assert out.readings == [
        (NOW, "meter-1", "energy", 3.0),
        (NOW, "meter-1", "energy_sum", 1005.0),
        (NOW - timedelta(seconds=60), "meter-1", "energy_sum", 1002.0),
        # a base sum with no sum of the record's own still gives the record a sum (RFC 4.5.4)
        (NOW, "meter-1", "flow", 1.5),
        (NOW, "meter-1", "flow_sum", 1000.0),
    ]


def test_sum_metric_follows_the_rename() -> None:
    pack = [{"bn": "t-1", "u": "%RH", "v": 70, "s": 10}]
    out = run(pack, choice="bn")
    assert [r[2] for r in out.readings] == ["humidity", "humidity_sum"]


def test_base_unit_names_a_record_without_a_name_or_unit() -> None:
    out = run(
        [{"bn": "gps-1", "bu": "lat", "v": -6.35}, {"u": "lon", "v": 107.03}, {"t": 1, "v": -6.36}]
    )
    assert out.problems == []
    assert out.readings == [
        (NOW, "d-1", "lat", -6.35),
        (NOW, "d-1", "lon", 107.03),
        (NOW + timedelta(seconds=1), "d-1", "lat", -6.36),
    ]


def test_one_key_two_values_in_a_pack_is_a_conflict_and_the_rest_is_kept() -> None:
    out = run([{"bn": "gps-1", "bu": "lat", "v": -6.35}, {"u": "lon", "v": 107.03}, {"v": -6.36}])
    assert out.readings == [(NOW, "d-1", "lon", 107.03)]
    assert [p.reason for p in out.problems] == [CONFLICTING]
    assert "d-1/lat at 2026-11-24T03:00:00+00:00" in out.problems[0].detail
    assert "-6.35 and -6.36" in out.problems[0].detail


def test_a_record_with_no_name_and_no_unit_is_a_missing_field() -> None:
    out = run([{"bn": "x", "v": 1}, {"n": "ok", "v": 2}])
    assert [(r[2], r[3]) for r in out.readings] == [("ok", 2.0)]
    assert [p.reason for p in out.problems] == [MISSING_FIELD]


@pytest.mark.parametrize("version", [1, 5, 10])
def test_versions_up_to_10_are_read(version: int) -> None:
    assert len(run([{"bver": version, "n": "a", "v": 1}]).readings) == 1


@pytest.mark.parametrize(
    ("pack", "says"),
    [
        ([{"n": "a", "v": 1}, {"bver": 11, "n": "b", "v": 2}], "version 11 is newer than 10"),
        ([{"bver": 0, "n": "a", "v": 1}], "not a positive integer"),
        ([{"bver": "10", "n": "a", "v": 1}], "not a positive integer"),
        ([{"bver": 5, "n": "a", "v": 1}, {"bver": 6, "n": "b", "v": 1}], "versions 5 and 6"),
        ([{"n": "a", "v": 1}, {"n": "b", "v": 2, "alert_": 1}], "'alert_'"),
    ],
)
def test_a_pack_that_must_not_be_used_yields_nothing(pack: list[Any], says: str) -> None:
    out = run(pack)
    assert out.readings == []
    assert [p.reason for p in out.problems] == [MALFORMED]
    assert says in out.problems[0].detail


def test_unknown_fields_are_ignored() -> None:
    out = run([{"n": "a", "v": 1, "ut": 60, "vendor": {"x": 1}}])
    assert out.readings == [(NOW, "d-1", "a", 1.0)]


def test_relative_time_is_any_time_below_2_to_the_28() -> None:
    wide = Limits(max_future=timedelta(days=10_000), max_past=timedelta(days=20_000))
    below = 2**28 - 1
    out = run(
        [
            {"n": "a", "t": -(2**28) - 5, "v": 1},  # negative, however large: seconds ago
            {"n": "b", "bt": 2**28 - 100, "t": 99, "v": 2},  # bt + t is what counts
            {"n": "c", "bt": 2**28 - 100, "t": 100, "v": 3},  # 2**28: absolute, 1978-07-04
        ],
        limits=wide,
    )
    assert out.problems == []
    assert out.readings == [
        (NOW - timedelta(seconds=2**28 + 5), "d-1", "a", 1.0),
        (NOW + timedelta(seconds=below), "d-1", "b", 2.0),
        (datetime(1978, 7, 4, 21, 24, 16, tzinfo=UTC), "d-1", "c", 3.0),
    ]


def test_relative_times_out_of_range_are_problems_of_their_record() -> None:
    out = run([{"n": "a", "t": -1e300, "v": 1}, {"n": "b", "v": 2}])
    assert [r[2] for r in out.readings] == ["b"]
    assert [p.reason for p in out.problems] == [BAD_TIME]
    out = run([{"n": "a", "t": -86400 * 30, "v": 1}])
    assert [p.reason for p in out.problems] == [TIME_RANGE]


def test_a_bad_record_does_not_lose_the_rest_of_the_pack() -> None:
    out = run(
        [
            {"bn": "dev:", "n": "a", "v": "12"},
            {"n": "b", "vb": "yes"},
            {"n": "c", "v": 3},
        ],
        choice="bn",
    )
    assert out.readings == [(NOW, "dev", "c", 3.0)]
    assert [p.reason for p in out.problems] == [BAD_VALUE, BAD_VALUE]


def test_base_value_adds_to_numbers_only() -> None:
    out = run([{"bv": 100, "n": "a", "v": 1}, {"n": "b", "vb": True}, {"n": "c", "vs": "x"}])
    assert out.readings == [(NOW, "d-1", "a", 101.0), (NOW, "d-1", "b", 1.0)]


def test_a_record_naming_only_a_device_with_bn() -> None:
    """RFC 8428 5.1.1 with `device = "$bn"`: no base name, the name is the device."""
    out = run([{"n": "urn:dev:ow:10e2073a01080063", "u": "Cel", "v": 23.1}], choice="bn")
    assert out.readings == [(NOW, "urn:dev:ow:10e2073a01080063", "Cel", 23.1)]
