"""What a technician copies onto a device: a snippet with a realistic example in the device's
format and a ready-to-run `mosquitto_pub` line; the QR code carries the configuration only."""

from __future__ import annotations

import shlex
from datetime import UTC, datetime

import orjson
import pytest

from devices.models import Credentials, Device
from devices.setup import setup_for, snippet

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def device(fmt: str, topic: str) -> Device:
    return Device(
        device_id="aq-setu-07",
        name="Udara Setu",
        device_type="air_quality",
        kecamatan="setu",
        pillar="environment",
        latitude=None,
        longitude=None,
        address_note="",
        install_date=None,
        installed_by="",
        status="active",
        expected_interval_seconds=300,
        payload_format=fmt,  # type: ignore[arg-type]
        topic=topic,
        metadata={},
        created_at=NOW,
        updated_at=NOW,
        version=1,
        mqtt_username="aq-setu-07",
    )


CREDS = Credentials(
    host="mqtt.example",
    port=8883,
    username="aq-setu-07",
    password="vZpB-kDXj-AwmV-Y8pU-2uSY",
    topic="t",
    payload_format="json",
)
EXAMPLES = {"pm25_ugm3": 38.2, "pm10_ugm3": 61.7}


def sent_line(text: str) -> list[str]:
    line = text.splitlines()[-1]
    assert line.startswith("mosquitto_pub ")
    return shlex.split(line)


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


@pytest.mark.parametrize(
    ("fmt", "topic", "test_topic", "test_payload"),
    [
        ("json", "bekasi-json/setu/aq-setu-07", "bekasi-json/setu/aq-setu-07", None),
        ("number", "bekasi/setu/aq-setu-07", "bekasi/setu/aq-setu-07/pm25_ugm3", "38.2"),
        ("senml", "bekasi-senml/setu/aq-setu-07", "bekasi-senml/setu/aq-setu-07", None),
    ],
)
def test_snippet_has_realistic_values_and_a_ready_test_command(
    fmt: str, topic: str, test_topic: str, test_payload: str | None
) -> None:
    text = snippet(device(fmt, topic), EXAMPLES, "mqtt.example", 8883, CREDS)
    assert "38.2" in text
    assert "0.0" not in text
    command = sent_line(text)
    assert option(command, "-h") == "mqtt.example"
    assert option(command, "-p") == "8883"
    assert option(command, "-u") == "aq-setu-07"
    assert option(command, "-P") == "vZpB-kDXj-AwmV-Y8pU-2uSY"
    assert option(command, "-q") == "1"
    assert option(command, "-t") == test_topic
    payload = option(command, "-m")
    if test_payload is not None:
        assert payload == test_payload
    elif fmt == "json":
        assert orjson.loads(payload) == {"readings": EXAMPLES}  # no time: the receive time
    else:
        assert orjson.loads(payload) == [
            {"n": "pm25_ugm3", "v": 38.2},
            {"n": "pm10_ugm3", "v": 61.7},
        ]


def test_without_credentials_the_command_has_no_user() -> None:
    text = snippet(device("json", "bekasi-json/setu/aq-setu-07"), EXAMPLES, "h", 1883, None)
    assert "-u" not in sent_line(text)
    assert "MQTT_PASSWORD" not in text


def test_qr_code_carries_the_configuration_only() -> None:
    d = device("json", "bekasi-json/setu/aq-setu-07")
    full = setup_for(d, EXAMPLES, "mqtt.example", 8883, CREDS)
    assert "mosquitto_pub" in full.snippet
    import segno

    config = full.snippet.split("\n# Uji kirim")[0]
    assert full.qr_svg == segno.make(config, error="m").svg_inline(border=2, omitsize=True)
