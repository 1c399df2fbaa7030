"""Simulated sensors across the 23 kecamatan of Kabupaten Bekasi, for `make run` and load tests.

Each device reports in one of the supported payload formats on the topics of the default
mappings. The physics is simple but shaped like the real thing, in WIB time: river levels with a
semidiurnal tide (stronger near the coast) and a lagged response to rain; rain gauges with
convective afternoon bursts; PM2.5/PM10 with morning and evening peaks, washed out by rain;
traffic counts with weekday rush hours; street lights on at night, drawing power.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from pantau.errors import PantauError
from pantau.regency import KECAMATAN as REGENCY_KECAMATAN
from pantau.regency import LATITUDE, LONGITUDE
from pantau.supervisor import Worker

log = logging.getLogger(__name__)

KECAMATAN = [(k.name, k.latitude, k.longitude, k.coast) for k in REGENCY_KECAMATAN]

WIB = timedelta(hours=7)
Format = Literal["number", "json", "senml"]
FORMATS: tuple[Format, ...] = ("number", "json", "senml")
KINDS: dict[str, tuple[str, ...]] = {
    "wl": ("water_level_cm",),
    "rg": ("rain_mm",),
    "aq": ("pm25_ugm3", "pm10_ugm3"),
    "tc": ("vehicles",),
    "sl": ("power_w", "lamp_on"),
}
# The registry's device type of each kind (devices/ seeds these types).
DEVICE_TYPES: dict[str, str] = {
    "wl": "water_level",
    "rg": "rain_gauge",
    "aq": "air_quality",
    "tc": "traffic_counter",
    "sl": "street_light",
}
# How often each kind appears in a deployment.
_KIND_WEIGHTS = {"wl": 3, "rg": 2, "aq": 2, "tc": 2, "sl": 3}


def slug(name: str) -> str:
    return name.lower().replace(" ", "-")


@dataclass
class Device:
    device_id: str
    kind: str
    kecamatan: str
    latitude: float
    longitude: float
    coast: float
    fmt: Format
    rng: random.Random
    base: float = 0.0
    state: dict[str, float] = field(default_factory=dict)

    @property
    def metrics(self) -> tuple[str, ...]:
        return KINDS[self.kind]

    @property
    def device_type(self) -> str:
        return DEVICE_TYPES[self.kind]

    @property
    def kecamatan_id(self) -> str:
        return slug(self.kecamatan)

    @property
    def messages_per_report(self) -> int:
        """A bare-number device sends one message per metric; the others one per report."""
        return len(self.metrics) if self.fmt == "number" else 1


def report_interval_seconds(devices: list[Device], rate: float) -> int:
    """How often each device reports when all of them share `rate` messages per second: the
    time of one round through the devices (the simulator visits them in turn)."""
    per_round = sum(d.messages_per_report for d in devices)
    return max(1, math.ceil(per_round / rate))


class Weather:
    """Regency-wide rain: bursts that start more often in the afternoon (WIB)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._until = 0.0
        self.intensity = 0.0  # mm per hour now
        self.wetness = 0.0  # recent rain, decaying (drives rivers and washes out dust)
        self._last = time.time()

    def step(self, now: float) -> None:
        dt = max(0.0, now - self._last)
        self._last = now
        hour = ((now / 3600) + 7) % 24
        if now >= self._until:
            self.intensity = 0.0
            start_per_hour = 0.35 if 13 <= hour <= 18 else 0.05
            if self._rng.random() < start_per_hour * dt / 3600:
                self.intensity = self._rng.uniform(5, 60)
                self._until = now + self._rng.uniform(300, 2400)
        self.wetness = self.wetness * math.exp(-dt / 5400) + self.intensity * dt / 3600


def build_devices(
    count: int, fmt: Format | Literal["mixed"] = "mixed", seed: int = 7
) -> list[Device]:
    rng = random.Random(seed)
    kinds = [k for k, w in _KIND_WEIGHTS.items() for _ in range(w)]
    devices = []
    per_place: dict[tuple[str, str], int] = {}
    for i in range(count):
        name, lat, lon, coast = KECAMATAN[i % len(KECAMATAN)]
        kind = kinds[(i // len(KECAMATAN) + i) % len(kinds)]
        number = per_place.get((name, kind), 0) + 1
        per_place[(name, kind)] = number
        devices.append(
            Device(
                device_id=f"{kind}-{slug(name)}-{number:02d}",
                kind=kind,
                kecamatan=name,
                latitude=round(_clamp(lat + rng.uniform(-0.02, 0.02), *LATITUDE), 5),
                longitude=round(_clamp(lon + rng.uniform(-0.02, 0.02), *LONGITUDE), 5),
                coast=coast,
                fmt=FORMATS[i % 3] if fmt == "mixed" else fmt,
                rng=random.Random(rng.random()),
                base=rng.uniform(0.8, 1.2),
            )
        )
    return devices


def _clamp(value: float, low: float, high: float) -> float:
    """Keep simulated positions inside the regency's extent."""
    return min(high, max(low, value))


def sample(device: Device, weather: Weather, now: float) -> dict[str, float]:
    """The device's readings at `now` (epoch seconds)."""
    rng = device.rng
    local = datetime.fromtimestamp(now, UTC) + WIB
    hour = local.hour + local.minute / 60
    weekday = local.weekday() < 5
    if device.kind == "wl":
        tide = (1 - device.coast) * 60 * math.sin(2 * math.pi * now / (12.42 * 3600))
        level = 120 * device.base + tide + 8 * weather.wetness * (0.5 + device.coast)
        return {"water_level_cm": round(level + rng.gauss(0, 1.5), 1)}
    if device.kind == "rg":
        local_rain = weather.intensity * rng.uniform(0.6, 1.4) if weather.intensity else 0.0
        return {"rain_mm": round(local_rain / 60, 2)}  # mm in the last minute
    if device.kind == "aq":
        cycle = 18 * math.exp(-(((hour - 8) / 2) ** 2)) + 14 * math.exp(
            -(((hour - 20.5) / 2.5) ** 2)
        )
        washout = 1 / (1 + weather.wetness / 4)
        pm25 = max(3.0, (25 * device.base + cycle) * washout + rng.gauss(0, 2))
        return {"pm25_ugm3": round(pm25, 1), "pm10_ugm3": round(pm25 * rng.uniform(1.4, 1.9), 1)}
    if device.kind == "tc":
        rush = math.exp(-(((hour - 7.5) / 1.2) ** 2)) + math.exp(-(((hour - 17.5) / 1.5) ** 2))
        base = 20 + 160 * rush if weekday else 30 + 40 * math.exp(-(((hour - 12) / 4) ** 2))
        night = 0.3 if hour < 5 or hour > 22 else 1.0
        return {"vehicles": float(max(0, round(base * night * device.base + rng.gauss(0, 6))))}
    # street light: on from 18:00 to 05:45 WIB; now and then a lamp fails
    on = hour >= 18 or hour < 5.75
    failed = device.state.get("failed", 0.0) > now
    if not failed and rng.random() < 0.0005:
        device.state["failed"] = now + 3600
        failed = True
    lit = on and not failed
    return {"power_w": round(rng.uniform(95, 130) if lit else 0.4, 1), "lamp_on": float(lit)}


def messages(device: Device, readings: dict[str, float], now: float) -> Iterator[tuple[str, bytes]]:
    """The MQTT messages of one report, in the device's format, on the default mappings' topics."""
    kec = slug(device.kecamatan)
    if device.fmt == "number":
        for metric, value in readings.items():
            yield f"bekasi/{kec}/{device.device_id}/{metric}", repr(value).encode()
    elif device.fmt == "json":
        doc = {"ts": int(now * 1000), "readings": readings}
        yield f"bekasi-json/{kec}/{device.device_id}", orjson.dumps(doc)
    else:
        records: list[dict[str, object]] = [{"n": m, "v": v} for m, v in readings.items()]
        records[0]["bt"] = round(now, 3)
        yield f"bekasi-senml/{kec}/{device.device_id}", orjson.dumps(records)


class SimulatorRefused(PantauError):
    """The broker did not take the simulator's connection."""

    exit_code = 2


class Simulator:
    """Publishes the devices' reports at `rate` messages per second in total (QoS 1)."""

    def __init__(
        self,
        devices: list[Device],
        *,
        host: str,
        port: int,
        rate: float,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.devices = devices
        self.rate = rate
        self.sent = 0
        self._weather = Weather(random.Random(11))
        # MQTT 5, so refused publishes come back as refused (3.1.1 drops them silently).
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"pantau-simulator-{uuid.uuid4().hex[:6]}",
            protocol=mqtt.MQTTv5,
        )
        self.refused = 0
        self._client.on_publish = self._on_publish
        if username:
            self._client.username_pw_set(username, password)
        self._client.max_inflight_messages_set(1000)
        self._host, self._port = host, port

    def worker(self) -> Worker:
        async def run(stop: asyncio.Event) -> None:
            thread_stop = threading.Event()
            publishing = asyncio.ensure_future(asyncio.to_thread(self.run, thread_stop))
            stopping = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({publishing, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                thread_stop.set()
                await asyncio.wait({publishing})
            publishing.result()

        return Worker("simulator", run)

    def _on_publish(self, client: mqtt.Client, u: object, mid: int, reason: Any, p: object) -> None:
        if reason.is_failure:
            self.refused += 1

    def run(self, stop: threading.Event, duration: float | None = None) -> int:
        """Publish until `stop` is set (or `duration` seconds passed); return messages sent.
        Raises SimulatorRefused when the broker does not take the connection."""
        answered = threading.Event()
        refusal: list[str] = []

        def on_connect(client: mqtt.Client, u: object, f: object, reason: Any, p: object) -> None:
            if reason.is_failure:
                refusal.append(str(reason))
            answered.set()

        self._client.on_connect = on_connect
        self._client.connect(self._host, self._port)
        self._client.loop_start()
        last: mqtt.MQTTMessageInfo | None = None
        try:
            if not answered.wait(10):
                raise SimulatorRefused(f"the MQTT broker {self._host}:{self._port} did not answer")
            if refusal:
                raise SimulatorRefused(
                    f"the MQTT broker {self._host}:{self._port} refused the simulator: "
                    f"{refusal[0]}; expected mqtt.username/password of a client allowed to "
                    "publish on the default topics"
                )
            started = time.monotonic()
            next_at = started
            for topic, payload in self._stream():
                if stop.is_set() or (
                    duration is not None and time.monotonic() - started >= duration
                ):
                    break
                last = self._client.publish(topic, payload, qos=1)
                self.sent += 1
                next_at += 1 / self.rate
                delay = next_at - time.monotonic()
                if delay > 0:
                    stop.wait(delay)
                elif delay < -1:
                    next_at = time.monotonic()  # fell behind: do not burst to catch up
            if last is not None:
                # Wait for the broker's answer to the last message (refusals included).
                with contextlib.suppress(RuntimeError, ValueError):
                    last.wait_for_publish(5)
        finally:
            self._client.disconnect()
            self._client.loop_stop()
        if self.sent and self.refused == self.sent:
            raise SimulatorRefused(
                f"the MQTT broker {self._host}:{self._port} refused every message: this user may "
                "not publish on the default topics"
            )
        return self.sent

    def _stream(self) -> Iterator[tuple[str, bytes]]:
        while True:
            for device in self.devices:
                now = time.time()
                self._weather.step(now)
                yield from messages(device, sample(device, self._weather, now), now)
