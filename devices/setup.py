"""What a technician copies onto a device: a configuration snippet with an example payload in
the device's format, and the same as a QR code (an SVG made here, so the page needs no CDN)."""

from __future__ import annotations

import io
import time

import orjson
import psycopg
import segno

from devices import registry
from devices.models import Credentials, Device, Registered, Setup
from pantau.settings import MqttSettings


def snippet(
    device: Device, metrics: list[str], host: str, port: int, creds: Credentials | None
) -> str:
    now = int(time.time())
    example = {m: 0.0 for m in metrics} or {"value": 0.0}
    first = next(iter(example))
    if device.payload_format == "number":
        topic, payload = f"{device.topic}/{first}", "12.5"
    elif device.payload_format == "senml":
        records: list[dict[str, object]] = [{"n": m, "v": v} for m, v in example.items()]
        records[0]["bt"] = now
        topic, payload = device.topic, orjson.dumps(records).decode()
    else:
        topic = device.topic
        payload = orjson.dumps({"ts": now * 1000, "readings": example}).decode()
    lines = [
        f"# Pantau: {device.device_id} ({device.name})",
        f"MQTT_HOST={host}",
        f"MQTT_PORT={port}",
        f"MQTT_CLIENT_ID={device.device_id}",
    ]
    if creds is not None:
        lines += [f"MQTT_USERNAME={creds.username}", f"MQTT_PASSWORD={creds.password}"]
    lines += ["MQTT_QOS=1", f"MQTT_TOPIC={topic}", f"PAYLOAD={payload}"]
    return "\n".join(lines) + "\n"


def setup_for(
    device: Device, metrics: list[str], host: str, port: int, creds: Credentials | None
) -> Setup:
    text = snippet(device, metrics, host, port, creds)
    qr = segno.make(text, error="m")
    return Setup(snippet=text, qr_svg=qr.svg_inline(border=2, omitsize=True))


def terminal_qr(text: str) -> str:
    """The snippet as a QR code drawn with block characters, for a terminal."""
    out = io.StringIO()
    segno.make(text, error="m").terminal(out=out, compact=True)
    return out.getvalue()


async def registration(
    conn: psycopg.AsyncConnection, device: Device, creds: Credentials | None, mqtt: MqttSettings
) -> Registered:
    """What a technician gets back from registering a device (or renewing its password)."""
    types = {t.id: t for t in await registry.device_types(conn)}
    metrics = [m.metric for m in types[device.device_type].metrics]
    host, port = mqtt.device_host or mqtt.host, mqtt.device_port or mqtt.port
    setup = setup_for(device, metrics, host, port, creds)
    return Registered(device=device, credentials=creds, setup=setup)
