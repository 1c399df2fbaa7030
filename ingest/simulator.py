"""Simulated sensors across the 23 kecamatan of Kabupaten Bekasi, for `make run` and load tests.

Each device reports in one of the supported payload formats on the topics of the default
mappings. The physics is simple but shaped like the real thing, in WIB time: river levels with a
semidiurnal tide (stronger near the coast) and a lagged response to rain; rain gauges with
convective afternoon bursts; PM2.5/PM10 with morning and evening peaks, washed out by rain;
traffic counts with weekday rush hours; street lights on at night, drawing power.

For `make run` the sensors also misbehave on a schedule (`Incidents`): now and then one falls
silent for a few minutes, most devices of one kecamatan go dark together (a power cut), and a
river gauge rises over its alert level and falls back, so outages, an area outage and an alarm
appear within minutes of starting.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from pantau.errors import PantauError
from pantau.regency import KECAMATAN as REGENCY_KECAMATAN
from pantau.regency import LATITUDE, LONGITUDE
from pantau.supervisor import Worker

if TYPE_CHECKING:
    from pantau.settings import EmbeddedSettings

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


IncidentKind = Literal["silence", "area", "flood"]
# Siaga 3 of Kali Bekasi at the KP2C gauge is above 350 cm (DESIGN.md); a flood peaks between it
# and Siaga 2 (450 cm).
FLOOD_PEAK_CM = 420.0


@dataclass(frozen=True)
class Incident:
    """One scheduled misbehaviour: the devices fall silent (`silence`: one device, `area`: most
    of a kecamatan) or a river gauge's level rises to `FLOOD_PEAK_CM` and falls (`flood`)."""

    kind: IncidentKind
    starts: float
    ends: float
    kecamatan: str
    device_ids: frozenset[str]

    def active(self, now: float) -> bool:
        return self.starts <= now < self.ends

    def flood_share(self, now: float) -> float:
        """0..1: how far a flood has risen at `now` (up in the first 30%, held, down in the
        last 30%)."""
        if not self.active(now):
            return 0.0
        part = (now - self.starts) / (self.ends - self.starts)
        return min(1.0, part / 0.3, (1 - part) / 0.3)


class Incidents:
    """The simulator's schedule of outages and high water, from `start` (epoch seconds),
    deterministic for a seed. Every kind recurs about every `*_every` seconds (0: never); an
    area outage and a flood also come once within the first three minutes."""

    def __init__(
        self,
        devices: list[Device],
        start: float,
        *,
        seed: int = 7,
        silence_every: float = 180.0,
        area_every: float = 600.0,
        flood_every: float = 600.0,
        silence_seconds: tuple[float, float] = (60.0, 180.0),
        area_seconds: tuple[float, float] = (100.0, 140.0),
        flood_seconds: tuple[float, float] = (300.0, 420.0),
    ) -> None:
        self.devices = devices
        self.start = start
        self._seed = seed
        self._every = {"silence": silence_every, "area": area_every, "flood": flood_every}
        self._seconds = {"silence": silence_seconds, "area": area_seconds, "flood": flood_seconds}
        by_kecamatan: dict[str, list[Device]] = {}
        for device in devices:
            by_kecamatan.setdefault(device.kecamatan, []).append(device)
        most = max((len(v) for v in by_kecamatan.values()), default=0)
        # Kecamatan with enough devices for an area outage (3 by default), else the fullest.
        self._areas = {k: v for k, v in by_kecamatan.items() if len(v) >= min(3, most)}
        self._rivers = [d for d in devices if d.kind == "wl"]
        self._upcoming = self._generate()
        self._next: Incident | None = next(self._upcoming, None)
        self._live: list[Incident] = []
        self.started: list[Incident] = []  # the ones begun so far, in order (for logs)

    @classmethod
    def from_settings(
        cls, settings: EmbeddedSettings, devices: list[Device], start: float
    ) -> Incidents:
        return cls(
            devices,
            start,
            seed=settings.simulate_seed,
            silence_every=settings.simulate_silence_every_seconds,
            area_every=settings.simulate_area_outage_every_seconds,
            flood_every=settings.simulate_flood_every_seconds,
        )

    def schedule(self, until: float) -> list[Incident]:
        """Every incident that starts before `until` (a fresh look, state untouched)."""
        return list(itertools.takewhile(lambda i: i.starts < until, self._generate()))

    def active(self, now: float) -> list[Incident]:
        """The incidents under way at `now` (`now` must not go backwards)."""
        while self._next is not None and self._next.starts <= now:
            self._live.append(self._next)
            self.started.append(self._next)
            _log_incident(self._next)
            self._next = next(self._upcoming, None)
        self._live = [i for i in self._live if i.ends > now]
        return [i for i in self._live if i.active(now)]

    def silent(self, device: Device, now: float) -> bool:
        return any(i.kind != "flood" and device.device_id in i.device_ids for i in self.active(now))

    def adjust(self, device: Device, readings: dict[str, float], now: float) -> dict[str, float]:
        """The readings with a flood's water level on top, when one is under way there."""
        level = readings.get("water_level_cm")
        if level is None:
            return readings
        for incident in self.active(now):
            if incident.kind == "flood" and device.device_id in incident.device_ids:
                share = incident.flood_share(now)
                level = round(level + share * (FLOOD_PEAK_CM - level), 1)
        return {**readings, "water_level_cm": level}

    def _generate(self) -> Iterator[Incident]:
        kinds: list[IncidentKind] = ["silence", "area", "flood"]
        streams = [self._stream(kind, n) for n, kind in enumerate(kinds) if self._every[kind] > 0]
        return heapq.merge(*streams, key=lambda i: i.starts)

    def _stream(self, kind: IncidentKind, n: int) -> Iterator[Incident]:
        rng = random.Random(self._seed * 1000 + n)
        every = self._every[kind]
        if kind == "silence":
            at = self.start + rng.uniform(0.3, 1.0) * every
        else:  # once early, so `make run` shows it within minutes
            at = self.start + rng.uniform(20.0, min(every, 90.0 if kind == "flood" else 150.0))
        for _ in itertools.count():
            incident = self._pick(kind, rng, at, at + rng.uniform(*self._seconds[kind]))
            if incident is None:
                return
            yield incident
            at += every * rng.uniform(0.8, 1.2)

    def _pick(
        self, kind: IncidentKind, rng: random.Random, starts: float, ends: float
    ) -> Incident | None:
        if kind == "silence":
            if not self.devices:
                return None
            chosen = [rng.choice(self.devices)]
        elif kind == "area":
            if not self._areas:
                return None
            members = self._areas[rng.choice(sorted(self._areas))]
            count = max(min(len(members), 3), math.ceil(0.8 * len(members)))
            chosen = rng.sample(members, count)
        else:
            if not self._rivers:
                return None
            chosen = [rng.choice(self._rivers)]
        return Incident(
            kind, starts, ends, chosen[0].kecamatan, frozenset(d.device_id for d in chosen)
        )


def _log_incident(incident: Incident) -> None:
    seconds = incident.ends - incident.starts
    if incident.kind == "silence":
        log.info("simulator: %s falls silent for %.0f s", min(incident.device_ids), seconds)
    elif incident.kind == "area":
        log.info(
            "simulator: %d devices of %s go dark for %.0f s",
            len(incident.device_ids),
            incident.kecamatan,
            seconds,
        )
    else:
        log.info(
            "simulator: the river at %s rises to %.0f cm and falls back over %.0f s",
            min(incident.device_ids),
            FLOOD_PEAK_CM,
            seconds,
        )


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
        incidents: Incidents | None = None,
    ) -> None:
        self.devices = devices
        self.incidents = incidents
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
            for message in self._stream():
                if stop.is_set() or (
                    duration is not None and time.monotonic() - started >= duration
                ):
                    break
                if message is not None:
                    last = self._client.publish(*message, qos=1)
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
            # loop_start's wake-up socket pair is otherwise closed only when the client is
            # collected (a ResourceWarning when a cycle is collected first).
            self._client._reset_sockets()
        if self.sent and self.refused == self.sent:
            raise SimulatorRefused(
                f"the MQTT broker {self._host}:{self._port} refused every message: this user may "
                "not publish on the default topics"
            )
        return self.sent

    def _stream(self) -> Iterator[tuple[str, bytes] | None]:
        """The messages in turn; None for a silent device's turn (it keeps its time slot, so
        the others' interval stays the registered one)."""
        while True:
            for device in self.devices:
                now = time.time()
                self._weather.step(now)
                readings = sample(device, self._weather, now)
                if self.incidents is not None:
                    if self.incidents.silent(device, now):
                        yield None
                        continue
                    readings = self.incidents.adjust(device, readings, now)
                yield from messages(device, readings, now)
