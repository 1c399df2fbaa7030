"""What a technician copies onto a device: a configuration snippet with an example payload in
the device's format, and the same as a QR code (an SVG made here, so the page needs no CDN)."""

from __future__ import annotations

import io
import shlex
import time

import orjson
import psycopg
import segno

from devices import registry
from devices.models import Credentials, Device, Registered, Setup
from pantau.settings import MqttSettings


def snippet(
    device: Device, examples: dict[str, float], host: str, port: int, creds: Credentials | None
) -> str:
    """`examples`: each metric of the device's type with a realistic value."""
    now = int(time.time())
    example = dict(examples) or {"value": 12.5}
    first = next(iter(example))
    if device.payload_format == "number":
        topic, payload = f"{device.topic}/{first}", _number(example[first])
        test_payload = payload
    elif device.payload_format == "senml":
        records: list[dict[str, object]] = [{"n": m, "v": v} for m, v in example.items()]
        test_payload = orjson.dumps(records).decode()  # no time: the receive time is used
        records[0]["bt"] = now
        topic, payload = device.topic, orjson.dumps(records).decode()
    else:
        topic = device.topic
        payload = orjson.dumps({"ts": now * 1000, "readings": example}).decode()
        test_payload = orjson.dumps({"readings": example}).decode()
    lines = [
        f"# Pantau: {device.device_id} ({device.name})",
        f"MQTT_HOST={host}",
        f"MQTT_PORT={port}",
        f"MQTT_CLIENT_ID={device.device_id}",
    ]
    if creds is not None:
        lines += [f"MQTT_USERNAME={creds.username}", f"MQTT_PASSWORD={creds.password}"]
    lines += ["MQTT_QOS=1", f"MQTT_TOPIC={topic}", f"PAYLOAD={payload}"]
    # One test message from a laptop or the device's shell, ready to paste (the receive time is
    # the reading's time, so it works whenever it is run).
    command = ["mosquitto_pub", "-h", host, "-p", str(port), "-i", f"{device.device_id}-test"]
    if creds is not None:
        command += ["-u", creds.username, "-P", creds.password]
    command += ["-q", "1", "-t", topic, "-m", test_payload]
    return "\n".join(lines) + "\n" + _TEST_LINE + shlex.join(command) + "\n"


# Where the snippet's test command starts. The QR code carries the configuration only, so it
# stays small enough to scan off a phone screen.
_TEST_LINE = "\n# Uji kirim satu data:\n"


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def setup_for(
    device: Device, examples: dict[str, float], host: str, port: int, creds: Credentials | None
) -> Setup:
    text = snippet(device, examples, host, port, creds)
    qr = segno.make(text.split(_TEST_LINE, 1)[0], error="m")
    return Setup(snippet=text, qr_svg=qr.svg_inline(border=2, omitsize=True))


def terminal_qr(text: str) -> str:
    """The snippet's configuration as a QR code drawn with block characters, for a terminal."""
    out = io.StringIO()
    segno.make(text.split(_TEST_LINE, 1)[0], error="m").terminal(out=out, compact=True)
    return out.getvalue()


async def registration(
    conn: psycopg.AsyncConnection, device: Device, creds: Credentials | None, mqtt: MqttSettings
) -> Registered:
    """What a technician gets back from registering a device (or renewing its password)."""
    types = {t.id: t for t in await registry.device_types(conn)}
    examples = {
        m.metric: m.example if m.example is not None else _plausible(m.valid_min, m.valid_max)
        for m in types[device.device_type].metrics
    }
    host, port = mqtt.device_host or mqtt.host, mqtt.device_port or mqtt.port
    setup = setup_for(device, examples, host, port, creds)
    return Registered(device=device, credentials=creds, setup=setup)


def _plausible(low: float | None, high: float | None) -> float:
    """A value inside the valid range, for a metric without an example."""
    if low is not None and high is not None:
        return round(low + (high - low) / 4, 1)
    return low if low is not None else 1.0
