import pytest
from pydantic import ValidationError

from ingest.topics import Router
from pantau.errors import ConfigError
from pantau.mappings import MappingSettings, default_mappings
from pantau.settings import load_settings


def mapping(name: str, topic: str) -> MappingSettings:
    device = "{device}" if "{device}" in topic else "fixed-device"
    return MappingSettings(name=name, topic=topic, format="number", metric="x", device=device)


def test_first_matching_mapping_wins_and_captures_segments() -> None:
    router = Router(
        [
            mapping("a", "bekasi/{kecamatan}/{device}/x"),
            mapping("b", "bekasi/#"),
            mapping("c", "other/+/{device}"),
        ]
    )
    assert router.route("bekasi/setu/wl-1/x") == (0, {"kecamatan": "setu", "device": "wl-1"})
    assert router.route("bekasi/setu/wl-1/y") == (1, {})
    assert router.route("other/any/d9") == (2, {"device": "d9"})
    assert router.route("other/any") is None
    assert router.route("bekasi") == (1, {})  # # also matches the parent level, as in MQTT
    assert router.route("elsewhere/x") is None


def test_empty_segment_is_not_a_device() -> None:
    router = Router([mapping("a", "s/{device}")])
    assert router.route("s/") is None


def test_filters_are_deduplicated_and_shared() -> None:
    router = Router([mapping("a", "b/{device}/x"), mapping("b", "b/+/x"), mapping("c", "c/#")])
    assert router.filters() == ["b/+/x", "c/#"]
    assert router.filters("pantau") == ["$share/pantau/b/+/x", "$share/pantau/c/#"]


def test_default_mappings_cover_the_simulator_topics() -> None:
    router = Router(default_mappings())
    names = [m.name for m in router.mappings]

    def name(topic: str) -> str:
        routed = router.route(topic)
        assert routed is not None, topic
        return names[routed[0]]

    assert name("bekasi/setu/wl-setu-01/water_level_cm") == "bekasi-number"
    assert name("bekasi-json/setu/aq-setu-01") == "bekasi-json"
    assert name("bekasi-senml/setu/sl-setu-01") == "bekasi-senml"
    assert name("bekasi/setu/wl-setu-01/status") == "bekasi-status"
    # bekasi/+/+/status is covered by bekasi/+/+/+: one subscription, one delivery
    assert router.filters() == ["bekasi/+/+/+", "bekasi-json/+/+", "bekasi-senml/+/+"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"topic": "a/#/b", "format": "number", "metric": "x", "device": "d"},
            "# only as the last",
        ),
        ({"topic": "a/{device}", "format": "number"}, "no such segment"),
        ({"topic": "a/{device}", "format": "json"}, "exactly one of metrics, values or records"),
        ({"topic": "a/{device}", "format": "json", "values": "readings"}, "JSON path"),
        (
            {"topic": "a/{device}", "format": "json", "values": "$.r", "time_zone": "WIB"},
            "IANA time zone",
        ),
        (
            {"topic": "a/{device}", "format": "json", "values": "$.r", "convert": {"x": "m->km"}},
            "conversion 'm->km'",
        ),
        ({"topic": "a/{device}", "format": "xml"}, "'number', 'json', 'senml' or 'status'"),
    ],
)
def test_bad_mappings_are_explained(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MappingSettings(name="m", **fields)  # type: ignore[arg-type]


def test_mappings_from_the_config_file(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pantau.toml").write_text(
        """
[[ingest.mappings]]
name = "vendor-x"
topic = "vendorx/{device}/data"
format = "json"
metrics = { water_level_cm = "$.level" }
convert = { water_level_cm = "m->cm" }

[[ingest.mappings]]
name = "broken"
topic = "b/{device}"
format = "senml"
time_zone = "Mars/Olympus"
"""
    )
    with pytest.raises(ConfigError, match=r"ingest\.mappings\.1\.time_zone = 'Mars/Olympus'"):
        load_settings()
