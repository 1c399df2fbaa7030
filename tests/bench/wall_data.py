"""The wall benchmark's data set: 2,000 devices of every type across the 23 kecamatan, each
reporting every 5 minutes for 30 days, registered, retired, in maintenance or late, and a month
of outages (device outages, area outages with their grouped device outages, value alarms): who
reported when. Deterministic (seeded); no database (tests/bench/wall_load.py writes it)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

SLOT = 300  # seconds between two reports of a device
DAYS = 30
SPARE_SLOTS = 12 * 24  # room for the top-up before the timing (live ingestion goes on)
# Devices per type, and the metrics each reports (street lights: power only; cameras: the
# probe's `online`); 2,240 series, 8,640 reports each in 30 days.
MIX: dict[str, tuple[int, str, tuple[str, ...]]] = {
    "water_level": (380, "wl", ("water_level_cm",)),
    "rain_gauge": (230, "rg", ("rain_mm",)),
    "air_quality": (120, "aq", ("pm25_ugm3", "pm10_ugm3")),
    "weather": (40, "ws", ("air_temperature_c", "humidity_pct", "wind_speed_ms", "pressure_hpa")),
    "traffic_counter": (300, "tc", ("vehicles",)),
    "street_light": (360, "sl", ("power_w",)),
    "waste_bin": (270, "wb", ("fill_pct",)),
    "camera": (300, "cam", ("online",)),
}
URBAN = {
    "cikarang-barat", "cikarang-pusat", "cikarang-selatan", "cikarang-utara", "cikarang-timur",
    "tambun-selatan", "tambun-utara", "cibitung", "setu", "babelan", "tarumajaya",
}  # fmt: skip
CAMERA_CAUSES = ("offline:timeout", "offline:refused", "frozen", "black", "covered")
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass
class Device:
    device_id: str
    device_type: str
    kecamatan: str
    latitude: float
    longitude: float
    created_at: datetime
    phase: int  # seconds after each slot the device reports
    status: str = "active"
    retired_at: datetime | None = None
    pillar: str | None = None
    state: str = "up"
    cause: str | None = None
    since: datetime | None = None


@dataclass
class Outage:
    kind: str
    device: Device | None
    kecamatan: str
    cause: str
    severity: str
    started_at: datetime
    ended_at: datetime | None
    parent: int | None = None  # index of the area outage in the list
    metric: str | None = None
    level: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataSet:
    """Everything generated, and how long the load took."""

    start: datetime  # the first slot, an UTC hour
    end: datetime  # the load's "now"
    devices: list[Device]
    series: list[tuple[int, str]]  # (device index, metric)
    alive: np.ndarray  # [series, slot]: reported in that slot
    outages: list[Outage] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def us(t: datetime) -> int:
    """A time as COPY BINARY's timestamptz: microseconds since 2000-01-01 UTC."""
    return (t - PG_EPOCH) // timedelta(microseconds=1)


def build(now: datetime, seed: int = 11) -> DataSet:
    """The devices, their series and outages, deterministic from `seed`; no database."""
    rng = np.random.default_rng(seed)
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(days=DAYS)
    kecamatan = KECAMATAN
    weights = np.array([2.0 if k in URBAN else 1.0 for k, _, _ in kecamatan])
    weights /= weights.sum()
    devices: list[Device] = []
    for kind, (count, prefix, _) in MIX.items():
        numbers: dict[str, int] = {}
        for i in range(count):
            k, lat, lon = kecamatan[rng.choice(len(kecamatan), p=weights)]
            numbers[k] = numbers.get(k, 0) + 1
            created = now - timedelta(days=float(rng.uniform(35, 400)))
            devices.append(
                Device(
                    f"{prefix}-{k}-{numbers[k]:03d}",
                    kind,
                    k,
                    lat + float(rng.uniform(-0.02, 0.02)),
                    lon + float(rng.uniform(-0.02, 0.02)),
                    created,
                    int(rng.integers(0, SLOT)),
                    pillar="governance" if kind == "camera" and i % 6 == 0 else None,
                )
            )
    order = rng.permutation(len(devices))
    # 40 registered during the month, 5 an hour ago (never reported: unknown), 20 retired
    # during the month, 6 in maintenance now.
    for i in order[:40]:
        devices[i].created_at = now - timedelta(days=float(rng.uniform(1, 25)))
    for i in order[40:45]:
        devices[i].created_at = now - timedelta(hours=1)
        devices[i].state = "unknown"
    for i in order[45:65]:
        devices[i].status = "retired"
        devices[i].retired_at = now - timedelta(days=float(rng.uniform(1, 28)))
        devices[i].state = "retired"
    for i in order[65:71]:
        devices[i].status = "maintenance"
        devices[i].state = "paused"
        devices[i].since = now - timedelta(hours=float(rng.uniform(2, 72)))
    for i in order[71:96]:
        devices[i].state = "late"
    series = [(d, m) for d, dev in enumerate(devices) for m in MIX[dev.device_type][2]]
    slots = DAYS * 24 * 12 + SPARE_SLOTS
    alive = np.ones((len(series), slots), dtype=bool)
    data = DataSet(start, now, devices, series, alive)
    data.outages = _outages(data, rng)
    _mask(data)
    return data


def slot_of(data: DataSet, t: datetime) -> int:
    return max(0, min(data.alive.shape[1], math.ceil((t - data.start).total_seconds() / SLOT)))


def _outages(data: DataSet, rng: np.random.Generator) -> list[Outage]:
    now, start = data.end, data.start
    out: list[Outage] = []
    busy: dict[str, list[tuple[datetime, datetime]]] = {}

    def free(dev: Device, a: datetime, b: datetime) -> bool:
        return all(b <= x or a >= y for x, y in busy.get(dev.device_id, []))

    def device_outage(dev: Device, a: datetime, b: datetime | None, parent: int | None) -> None:
        cause = str(rng.choice(CAMERA_CAUSES)) if dev.device_type == "camera" else "silent"
        severity = "critical" if dev.device_type in ("water_level", "camera") else "warning"
        out.append(Outage("device", dev, dev.kecamatan, cause, severity, a, b, parent))
        busy.setdefault(dev.device_id, []).append((a, b or now + timedelta(days=1)))
        if b is None:
            dev.state, dev.cause, dev.since = "down", cause, a

    live = [d for d in data.devices if d.state not in ("unknown",)]
    # Area outages: 8 closed in the month and one open now, 60-90 % of the kecamatan's devices.
    areas = list(rng.choice(len(KECAMATAN), size=9, replace=False))
    for n, k in enumerate(areas):
        kec = KECAMATAN[k][0]
        if n == 8:
            a, b = now - timedelta(hours=3), None
        else:
            a = start + timedelta(hours=float(rng.uniform(12, DAYS * 24 - 24)))
            b = a + timedelta(hours=float(rng.uniform(1, 6)))
        members = [
            d
            for d in live
            if d.kecamatan == kec
            and d.created_at < a
            and d.status == "active"
            and (d.retired_at is None or d.retired_at > (b or now))
        ]
        down = [d for d in members if rng.random() < rng.uniform(0.6, 0.9)]
        share = len(down) / max(1, len(members))
        out.append(
            Outage(
                "area",
                None,
                kec,
                "area",
                "critical",
                a,
                b,
                detail={"down": len(down), "total": len(members), "share": round(share, 3)},
            )
        )
        parent = len(out) - 1
        for d in down:
            lag = timedelta(seconds=float(rng.uniform(0, 120)))
            device_outage(d, a + lag, None if b is None else b - lag, parent)
    # Device outages: 1.2 per device in the month, median 45 min, a few lasting days; and 40
    # devices down now (since the last 36 h).
    for d in live:
        life_end = d.retired_at or now
        for _ in range(int(rng.poisson(1.2))):
            first = max(start, d.created_at)
            if life_end - first < timedelta(hours=1):
                break
            a = first + (life_end - first) * float(rng.uniform(0, 0.95))
            b = a + timedelta(minutes=float(np.clip(rng.lognormal(math.log(45), 1.2), 5, 4320)))
            if b >= now - timedelta(minutes=10):
                b = now - timedelta(minutes=10)
            if b > a and free(d, a, b):
                device_outage(d, a, b, None)
    candidates = [d for d in live if d.status == "active" and d.state == "up"]
    for i in rng.choice(len(candidates), size=40, replace=False):
        d = candidates[int(i)]
        a = now - timedelta(hours=float(rng.uniform(0.2, 36)))
        if free(d, a, now):
            device_outage(d, a, None, None)
    # Value alarms: rivers over their Siaga levels, unhealthy air, heavy rain; some open now.
    specs = (
        (
            "water_level",
            "water_level_cm",
            (
                ("Siaga 3", "info", 1, 350),
                ("Siaga 2", "warning", 2, 450),
                ("Siaga 1", "critical", 3, 550),
            ),
            320,
            8,
        ),
        (
            "air_quality",
            "pm25_ugm3",
            (("Tidak Sehat", "warning", 2, 55.5), ("Sangat Tidak Sehat", "critical", 3, 150.5)),
            180,
            5,
        ),
        (
            "rain_gauge",
            "rain_mm",
            (
                ("Hujan lebat (1 jam)", "warning", 1, 10),
                ("Hujan sangat lebat (1 jam)", "critical", 3, 20),
            ),
            100,
            3,
        ),
    )
    for kind, metric, levels, count, open_now in specs:
        gauges = [d for d in live if d.device_type == kind and d.status == "active"]
        for n in range(count):
            d = gauges[int(rng.integers(len(gauges)))]
            name, severity, rank, raise_at = levels[int(rng.integers(len(levels))) if n % 4 else 0]
            if n < open_now:
                d = gauges[n]
                a, b = now - timedelta(hours=float(rng.uniform(0.2, 8))), None
            else:
                a = start + timedelta(hours=float(rng.uniform(0, DAYS * 24 - 12)))
                b = a + timedelta(minutes=float(rng.uniform(30, 600)))
            value = raise_at * float(rng.uniform(1.0, 1.2))
            out.append(
                Outage(
                    "alarm",
                    d,
                    d.kecamatan,
                    name,
                    severity,
                    a,
                    b,
                    metric=metric,
                    level=name,
                    detail={"value": round(value, 1), "raise_at": raise_at, "rank": rank},
                )
            )
    return out


def _mask(data: DataSet) -> None:
    """Who reported when: from registration to retirement, silent in their outages; the late
    ones missed their last two reports."""
    rows: dict[int, list[int]] = {}
    for s, (d, _) in enumerate(data.series):
        rows.setdefault(d, []).append(s)
    index = {dev.device_id: d for d, dev in enumerate(data.devices)}
    alive = data.alive
    for d, dev in enumerate(data.devices):
        rs = rows[d]
        alive[rs, : slot_of(data, dev.created_at)] = False
        if dev.retired_at:
            alive[rs, slot_of(data, dev.retired_at) :] = False
        if dev.state == "unknown":
            alive[rs, :] = False
        if dev.state == "late":
            last = slot_of(data, data.end - timedelta(seconds=dev.phase))
            alive[rs, last - 2 :] = False
    for o in data.outages:
        if o.kind == "device" and o.device is not None:
            rs = rows[index[o.device.device_id]]
            hi = alive.shape[1] if o.ended_at is None else slot_of(data, o.ended_at)
            alive[rs, slot_of(data, o.started_at) : hi] = False


def slots_until(data: DataSet, t: datetime) -> int:
    """The slot count from the start up to (and including) time t."""
    return min(data.alive.shape[1], int((t - data.start).total_seconds() // SLOT) + 1)


KECAMATAN: list[tuple[str, float, float]] = [
    ("babelan", -6.1333, 107.0333), ("bojongmangu", -6.4333, 107.1667),
    ("cabangbungin", -6.0667, 107.1333), ("cibarusah", -6.4333, 107.0833),
    ("cibitung", -6.2667, 107.0833), ("cikarang-barat", -6.2667, 107.1),
    ("cikarang-pusat", -6.35, 107.15), ("cikarang-selatan", -6.35, 107.1),
    ("cikarang-timur", -6.2833, 107.1833), ("cikarang-utara", -6.2833, 107.1333),
    ("karangbahagia", -6.1833, 107.1167), ("kedungwaringin", -6.2333, 107.2333),
    ("muaragembong", -5.9833, 107.0333), ("pebayuran", -6.15, 107.2833),
    ("serang-baru", -6.3833, 107.1), ("setu", -6.35, 107.0333),
    ("sukakarya", -6.1, 107.1833), ("sukatani", -6.1667, 107.15),
    ("sukawangi", -6.0333, 107.1), ("tambelang", -6.1667, 107.0833),
    ("tambun-selatan", -6.2667, 107.05), ("tambun-utara", -6.2, 107.0667),
    ("tarumajaya", -6.1, 106.9833),
]  # fmt: skip
