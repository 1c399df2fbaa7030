"""The wall benchmark's data set: 2,000 devices of every type across the 23 kecamatan reporting
every 5 minutes for 30 days, with their rollups, liveness, cameras and a month of outages,
alarms and maintenance windows. Readings and rollups are built with numpy and sent with binary
COPY (one block per UTC hour, in arrival order, so a day's partition is laid out as ingestion
lays it out: every device's readings of an hour side by side). Deterministic (seeded)."""

from __future__ import annotations

import json
import math
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg

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
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
COPY_TRAILER = b"\xff\xff"


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


def _us(t: datetime) -> int:
    """A time as COPY BINARY's timestamptz: microseconds since 2000-01-01 UTC."""
    return (t - PG_EPOCH) // timedelta(microseconds=1)


def _text_field(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("!i", len(raw)) + raw


def build(now: datetime, seed: int = 11) -> DataSet:
    """The devices, their series and outages, deterministic from `seed`; no database."""
    rng = np.random.default_rng(seed)
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(days=DAYS)
    kecamatan = _KECAMATAN
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


def _slot(data: DataSet, t: datetime) -> int:
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
    areas = list(rng.choice(len(_KECAMATAN), size=9, replace=False))
    for n, k in enumerate(areas):
        kec = _KECAMATAN[k][0]
        if n == 8:
            a, b = now - timedelta(hours=3), None
        else:
            a = start + timedelta(hours=float(rng.uniform(12, DAYS * 24 - 24)))
            b = a + timedelta(hours=float(rng.uniform(1, 6)))
        members = [
            d for d in live
            if d.kecamatan == kec and d.created_at < a and d.status == "active"
            and (d.retired_at is None or d.retired_at > (b or now))
        ]  # fmt: skip
        down = [d for d in members if rng.random() < rng.uniform(0.6, 0.9)]
        share = len(down) / max(1, len(members))
        out.append(
            Outage("area", None, kec, "area", "critical", a, b,
                   detail={"down": len(down), "total": len(members), "share": round(share, 3)})
        )  # fmt: skip
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
        ("water_level", "water_level_cm", (("Siaga 3", "info", 1, 350), ("Siaga 2", "warning", 2,
         450), ("Siaga 1", "critical", 3, 550)), 320, 8),
        ("air_quality", "pm25_ugm3", (("Tidak Sehat", "warning", 2, 55.5),
         ("Sangat Tidak Sehat", "critical", 3, 150.5)), 180, 5),
        ("rain_gauge", "rain_mm", (("Hujan lebat (1 jam)", "warning", 1, 10),
         ("Hujan sangat lebat (1 jam)", "critical", 3, 20)), 100, 3),
    )  # fmt: skip
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
                Outage("alarm", d, d.kecamatan, name, severity, a, b, metric=metric, level=name,
                       detail={"value": round(value, 1), "raise_at": raise_at, "rank": rank})
            )  # fmt: skip
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
        alive[rs, : _slot(data, dev.created_at)] = False
        if dev.retired_at:
            alive[rs, _slot(data, dev.retired_at) :] = False
        if dev.state == "unknown":
            alive[rs, :] = False
        if dev.state == "late":
            last = _slot(data, data.end - timedelta(seconds=dev.phase))
            alive[rs, last - 2 :] = False
    for o in data.outages:
        if o.kind == "device" and o.device is not None:
            rs = rows[index[o.device.device_id]]
            hi = alive.shape[1] if o.ended_at is None else _slot(data, o.ended_at)
            alive[rs, _slot(data, o.started_at) : hi] = False


def _values(kind: str, metric: str, hours: np.ndarray, base: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """Plausible values at UTC `hours` since the epoch ([slots, series]) for one metric."""
    wib = (hours + 7) % 24
    day = np.floor((hours + 7) / 24)
    noise = rng.standard_normal(hours.shape)
    if metric == "water_level_cm":
        storm = np.maximum(0, np.sin(day * 1.7 + base * 6) - 0.6) * 400
        return np.clip(base * 60 + 120 + 25 * np.sin(wib / 24 * 2 * np.pi) + storm + noise, 0, 1500)
    if metric == "rain_mm":
        wet = (np.sin(day * 2.3 + base * 6) > 0.3) & (wib > 13) & (wib < 18)
        return np.where(wet, np.abs(noise) * 1.5, 0.0)
    if metric == "pm25_ugm3":
        return np.clip(35 + 20 * np.sin(wib / 24 * 2 * np.pi + 2) + base * 15 + 8 * noise, 2, 400)
    if metric == "pm10_ugm3":
        return np.clip(60 + 30 * np.sin(wib / 24 * 2 * np.pi + 2) + base * 20 + 12 * noise, 4, 600)
    if metric == "air_temperature_c":
        return 28 + 4 * np.sin((wib - 9) / 24 * 2 * np.pi) + 0.3 * noise
    if metric == "humidity_pct":
        return np.clip(78 - 12 * np.sin((wib - 9) / 24 * 2 * np.pi) + noise, 0, 100)
    if metric == "wind_speed_ms":
        return np.abs(2.5 + 1.5 * noise)
    if metric == "pressure_hpa":
        return 1009 + 1.5 * np.sin(wib / 12 * 2 * np.pi) + 0.2 * noise
    if metric == "vehicles":
        rush = np.exp(-((wib - 7.5) ** 2) / 2) + np.exp(-((wib - 17.5) ** 2) / 3)
        return np.round(np.maximum(0, 40 + 350 * rush * (0.5 + base) + 15 * noise))
    if metric == "power_w":
        return np.where((wib >= 18) | (wib < 6), 110 + 3 * noise, 0.0)
    if metric == "fill_pct":
        return np.clip(((hours / 24 + base * 3) % 3) / 3 * 100 + noise, 0, 100)
    if metric == "online":
        return np.ones(hours.shape)
    raise ValueError(metric)


@dataclass
class _Group:
    columns: np.ndarray  # series indexes
    prefix: np.ndarray  # per series: field count, device_id, metric (COPY BINARY)
    prefix_7: np.ndarray  # the same for a rollup row (7 fields)


def _groups(data: DataSet) -> list[_Group]:
    by_length: dict[int, list[int]] = {}
    for s, (d, metric) in enumerate(data.series):
        by_length.setdefault(len(data.devices[d].device_id) + len(metric), []).append(s)
    groups = []
    for length, columns in sorted(by_length.items()):
        head = [
            _text_field(data.devices[data.series[s][0]].device_id) + _text_field(data.series[s][1])
            for s in columns
        ]
        groups.append(
            _Group(
                np.array(columns),
                np.array([b"\x00\x04" + h for h in head], dtype=f"S{length + 10}"),
                np.array([b"\x00\x07" + h for h in head], dtype=f"S{length + 10}"),
            )
        )
    return groups


def _chunks(data: DataSet, lo: int, hi: int) -> Iterator[tuple[int, int, np.ndarray, np.ndarray,
                                                                 np.ndarray]]:  # fmt: skip
    """Per UTC hour of slots [lo, hi): (first slot, last slot + 1, times in us [slots, series],
    values, reported [slots, series])."""
    phases = np.array([data.devices[d].phase for d, _ in data.series], dtype=np.int64)
    base = np.array(
        [(zlib.crc32(data.devices[d].device_id.encode()) % 1000) / 1000 for d, _ in data.series]
    )  # each device's own level
    kinds = [(data.devices[d].device_type, m) for d, m in data.series]
    by_metric: dict[str, list[int]] = {}
    for s, (_, m) in enumerate(kinds):
        by_metric.setdefault(m, []).append(s)
    start_us = _us(data.start)
    end_us = _us(data.end)
    unix_hours = PG_EPOCH.timestamp() / 3600
    a = lo
    while a < hi:
        b = min(hi, (a // 12 + 1) * 12)
        slots = np.arange(a, b, dtype=np.int64)[:, None]
        times = start_us + (slots * SLOT + phases[None, :]) * 1_000_000
        hours = times / 3.6e9 + unix_hours
        rng = np.random.default_rng(a)
        values = np.empty(times.shape)
        for metric, cols in by_metric.items():
            values[:, cols] = _values(kinds[cols[0]][0], metric, hours[:, cols], base[cols], rng)
        reported = data.alive[:, a:b].T & (times <= end_us)
        yield a, b, times, values, reported
        a = b


def _copy_blocks(data: DataSet, lo: int, hi: int, what: str, counted: list[int]) -> Iterator[bytes]:
    """COPY BINARY blocks of `what` ('readings', 'readings_1m' or 'readings_1h')."""
    groups = _groups(data)
    yield COPY_SIGNATURE
    raw_tail = np.dtype([("tl", ">i4"), ("t", ">i8"), ("vl", ">i4"), ("v", ">f8")])
    roll_tail = np.dtype(
        [("tl", ">i4"), ("t", ">i8"), ("nl", ">i4"), ("n", ">i8"), ("al", ">i4"), ("a", ">f8"),
         ("il", ">i4"), ("i", ">f8"), ("xl", ">i4"), ("x", ">f8")]
    )  # fmt: skip
    for _, _, times, values, reported in _chunks(data, lo, hi):
        parts = []
        for g in groups:
            ok = reported[:, g.columns]
            if not ok.any():
                continue
            if what == "readings_1h":
                n = ok.sum(axis=0)
                v = values[:, g.columns]
                keep = n > 0
                rec = np.empty(int(keep.sum()), dtype=[("p", g.prefix_7.dtype), ("r", roll_tail)])
                rec["p"] = g.prefix_7[keep]
                r = rec["r"]
                r["tl"], r["nl"], r["al"], r["il"], r["xl"] = 8, 8, 8, 8, 8
                r["t"] = (times[0, 0] // 3_600_000_000) * 3_600_000_000
                r["n"] = n[keep]
                r["a"] = (np.where(ok, v, 0).sum(axis=0) / np.maximum(n, 1))[keep]
                r["i"] = np.where(ok, v, np.inf).min(axis=0)[keep]
                r["x"] = np.where(ok, v, -np.inf).max(axis=0)[keep]
            elif what == "readings_1m":
                shape = ok.shape
                rec = np.empty(shape, dtype=[("p", g.prefix_7.dtype), ("r", roll_tail)])
                rec["p"] = np.broadcast_to(g.prefix_7, shape)
                r = rec["r"]
                r["tl"], r["nl"], r["al"], r["il"], r["xl"] = 8, 8, 8, 8, 8
                r["t"] = (times[:, g.columns] // 60_000_000) * 60_000_000
                r["n"] = 1
                r["a"] = r["i"] = r["x"] = values[:, g.columns]
                rec = rec[ok]
            else:
                shape = ok.shape
                rec = np.empty(shape, dtype=[("p", g.prefix.dtype), ("r", raw_tail)])
                rec["p"] = np.broadcast_to(g.prefix, shape)
                r = rec["r"]
                r["tl"], r["vl"] = 8, 8
                r["t"] = times[:, g.columns]
                r["v"] = values[:, g.columns]
                rec = rec[ok]
            counted[0] += len(rec)
            parts.append(rec.tobytes())
        yield b"".join(parts)
    yield COPY_TRAILER


def copy_series(conn: psycopg.Connection[Any], data: DataSet, what: str, lo: int, hi: int) -> int:
    """Write slots [lo, hi) of every series to `what` with binary COPY; the rows written."""
    columns = (
        "device_id, metric, time, value"
        if what == "readings"
        else "device_id, metric, bucket, samples, avg, min, max"
    )
    counted = [0]
    with (
        conn.cursor() as cur,
        cur.copy(f"COPY {what} ({columns}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        for block in _copy_blocks(data, lo, hi, what, counted):
            copy.write(block)
    return counted[0]


def slots_until(data: DataSet, t: datetime) -> int:
    """The slot count from the start up to (and including) time t."""
    return min(data.alive.shape[1], int((t - data.start).total_seconds() // SLOT) + 1)


def load(conn: psycopg.Connection[Any], data: DataSet) -> None:
    """Write the data set into a migrated (plain) database; conn in autocommit."""
    first, last = data.start.date(), (data.end + timedelta(days=2)).date()
    for parent in ("readings", "readings_1m"):
        conn.execute("SELECT pantau_ensure_partitions(%s, %s, %s)", (parent, first, last))
    timed(data, "registry, cameras, outages, liveness")(lambda: _registry(conn, data))
    slots = slots_until(data, data.end)
    for what in ("readings", "readings_1m", "readings_1h"):
        data.rows[what] = timed(data, f"COPY {what}")(
            lambda what=what: copy_series(conn, data, what, 0, slots)
        )
    timed(data, "camera_health")(lambda: _camera_health(conn, data, slots))
    timed(data, "VACUUM ANALYZE")(lambda: conn.execute("VACUUM (ANALYZE)"))


def top_up(conn: psycopg.Connection[Any], data: DataSet, now: datetime) -> int:
    """Live ingestion goes on: the readings from the load's end to `now`, the rollups refreshed
    by Pantau's own pantau_refresh_rollups, device_last_seen moved on. The readings written."""
    lo = slots_until(data, data.end)
    since = data.start + timedelta(seconds=lo * SLOT)
    data.end = now
    hi = slots_until(data, now)
    written = copy_series(conn, data, "readings", lo, hi)
    conn.execute("SELECT pantau_refresh_rollups(%s, %s)", (since - timedelta(hours=1), now))
    conn.execute(
        "UPDATE device_last_seen s SET last_reading_at = x.t, last_received_at = x.t"
        " FROM (SELECT device_id, max(time) AS t FROM readings WHERE time >= %s GROUP BY 1) x"
        " WHERE x.device_id = s.device_id",
        (since,),
    )
    return written


def _registry(conn: psycopg.Connection[Any], data: DataSet) -> None:
    now = data.end
    with conn.cursor() as cur:
        with cur.copy(
            "COPY devices (device_id, name, device_type, kecamatan, pillar, latitude, longitude,"
            " expected_interval_seconds, status, created_at, updated_at, installed_by)"
            " FROM STDIN"
        ) as copy:
            for d in data.devices:
                name = f"{d.device_type.replace('_', ' ').title()} {d.device_id.split('-', 1)[1]}"
                copy.write_row((d.device_id, name, d.device_type, d.kecamatan, d.pillar,
                                d.latitude, d.longitude, SLOT, d.status, d.created_at,
                                d.retired_at or d.created_at, "bench"))  # fmt: skip
        with cur.copy(
            "COPY audit_log (at, actor, action, entity, entity_id, before, after) FROM STDIN"
        ) as copy:
            for d in data.devices:
                copy.write_row((d.created_at, "bench", "create", "device", d.device_id, None,
                                _json({"device_id": d.device_id, "status": "active"})))  # fmt: skip
                if d.retired_at:
                    copy.write_row((d.retired_at, "bench", "retire", "device", d.device_id,
                                    _json({"status": "active"}),
                                    _json({"status": "retired"})))  # fmt: skip
        cameras = [d for d in data.devices if d.device_type == "camera"]
        with cur.copy("COPY cameras (device_id, rtsp_url, enabled) FROM STDIN") as copy:
            for n, d in enumerate(cameras):
                copy.write_row((d.device_id, f"rtsp://10.20.{n // 250}.{n % 250 + 1}:554/s1",
                                n % 30 != 0))  # fmt: skip
        # 30 river gauges with their own Siaga levels.
        gauges = [d for d in data.devices if d.device_type == "water_level"][:30]
        with cur.copy(
            "COPY device_alarm_levels (device_id, metric, rank, name, severity, raise_at,"
            " clear_at, source) FROM STDIN"
        ) as copy:
            for n, d in enumerate(gauges):
                for rank, (name, severity, at) in enumerate(
                    (("Siaga 3", "info", 250), ("Siaga 2", "warning", 320),
                     ("Siaga 1", "critical", 400)), start=1):  # fmt: skip
                    copy.write_row((d.device_id, "water_level_cm", rank, name, severity,
                                    at + n, at + n - 20, "BBWS Citarum (bench)"))  # fmt: skip
        # Maintenance: 60 closed device windows, 3 kecamatan windows, the devices in maintenance.
        rng = np.random.default_rng(5)
        windows = []
        for i in rng.choice(len(data.devices), size=60, replace=False):
            d = data.devices[int(i)]
            a = data.start + timedelta(hours=float(rng.uniform(0, DAYS * 24 - 10)))
            windows.append((d.device_id, None, a, a + timedelta(hours=float(rng.uniform(2, 8)))))
        for k in ("setu", "babelan", "sukatani"):
            a = data.start + timedelta(hours=float(rng.uniform(0, DAYS * 24 - 14)))
            windows.append((None, k, a, a + timedelta(hours=float(rng.uniform(4, 12)))))
        for d in data.devices:
            if d.status == "maintenance":
                windows.append((d.device_id, None, d.since, None))
        with cur.copy(
            "COPY maintenance_windows (device_id, kecamatan, starts_at, ends_at, reason,"
            " created_by) FROM STDIN"
        ) as copy:
            for w in windows:
                copy.write_row((*w, "pemeliharaan terjadwal", "bench"))
        _outage_rows(cur, data)
        conn.execute(
            "INSERT INTO alert_outbox (outage_id, event, receiver, created_at, status, attempts,"
            " delivered_at)"
            " SELECT id, 'raised', 'alertmanager', started_at,"
            "        CASE WHEN parent_id IS NULL THEN 'delivered' ELSE 'grouped' END, 1, started_at"
            " FROM outages"
            " UNION ALL"
            " SELECT id, 'resolved', 'alertmanager', ended_at,"
            "        CASE WHEN parent_id IS NULL THEN 'delivered' ELSE 'grouped' END, 1, ended_at"
            " FROM outages WHERE ended_at IS NOT NULL"
        )
        conn.execute(
            "UPDATE alert_outbox SET status = 'pending', delivered_at = NULL, attempts = 0"
            " WHERE id IN (SELECT id FROM alert_outbox WHERE status = 'delivered'"
            "              ORDER BY created_at DESC LIMIT 6)"
        )
        with cur.copy(
            "COPY device_liveness (device_id, state, cause, since, last_arrival_at) FROM STDIN"
        ) as copy:
            for d in data.devices:
                if d.status == "retired" or d.state == "unknown":
                    continue
                since = d.since or max(d.created_at, now - timedelta(days=3))
                copy.write_row((d.device_id, d.state, d.cause, since, None))
        last_seen = _last_seen(data)
        with cur.copy(
            "COPY device_last_seen (device_id, first_seen_at, last_reading_at, last_received_at)"
            " FROM STDIN"
        ) as copy:
            for device_id, (first, latest) in last_seen.items():
                copy.write_row((device_id, first, latest, latest))
            for n in range(10):  # reporting, not registered: pending adoption
                copy.write_row((f"unregistered-{n:02d}", now, now, now))
        snapshots = [d for d in cameras if d.state != "unknown"][:250]
        with cur.copy(
            "COPY camera_snapshots (device_id, taken_at, file_name, bytes) FROM STDIN"
        ) as copy:
            for d in snapshots:
                taken = last_seen.get(d.device_id, (now, now))[1]
                for n in range(24):
                    at = taken - timedelta(minutes=10 * n)
                    copy.write_row((d.device_id, at, f"{at:%Y%m%dT%H%M%S}.jpg", 85_000))
        with cur.copy(
            "COPY quarantine_hourly (source, hour, kept, summarised, reasons, last_at) FROM STDIN"
        ) as copy:
            for h in range(DAYS * 24):
                hour = data.start + timedelta(hours=h)
                for n, source in enumerate(("wl-setu-002", "tc-cibitung-004", "pantau/legacy")):
                    if (h + n) % (3 + n) == 0:
                        copy.write_row((source, hour, 1 + n, 4 * n, _json({"decode": 1 + n}),
                                        hour + timedelta(minutes=40)))  # fmt: skip
    counts = conn.execute(
        "SELECT (SELECT count(*) FROM outages WHERE kind = 'device'),"
        " (SELECT count(*) FROM outages WHERE kind = 'area'),"
        " (SELECT count(*) FROM outages WHERE kind = 'alarm'),"
        " (SELECT count(*) FROM outages WHERE ended_at IS NULL),"
        " (SELECT count(*) FROM maintenance_windows), (SELECT count(*) FROM alert_outbox)"
    ).fetchone()
    assert counts is not None
    for name, n in zip(
        ("device outages", "area outages", "value alarms", "open outages and alarms",
         "maintenance windows", "alert_outbox"), counts, strict=True
    ):  # fmt: skip
        data.rows[name] = int(n)


def _outage_rows(cur: psycopg.Cursor[Any], data: DataSet) -> None:
    ids: dict[int, int] = {}
    for n, o in enumerate(data.outages):
        if o.kind == "area":
            row = cur.execute(
                "INSERT INTO outages (kind, kecamatan, cause, severity, started_at, ended_at,"
                " detail) VALUES ('area', %s, 'area', %s, %s, %s, %s) RETURNING id",
                (o.kecamatan, o.severity, o.started_at, o.ended_at, _json(o.detail)),
            ).fetchone()
            assert row is not None
            ids[n] = int(row[0])
    pillars = {"camera": "society", "traffic_counter": "living", "street_light": "living"}
    with cur.copy(
        "COPY outages (kind, device_id, kecamatan, device_type, pillar, metric, level, cause,"
        " severity, started_at, ended_at, parent_id, detail) FROM STDIN"
    ) as copy:
        for o in data.outages:
            if o.kind == "area" or o.device is None:
                continue
            d = o.device
            copy.write_row((o.kind, d.device_id, o.kecamatan, d.device_type,
                            d.pillar or pillars.get(d.device_type, "environment"), o.metric,
                            o.level, o.cause, o.severity, o.started_at, o.ended_at,
                            None if o.parent is None else ids[o.parent],
                            _json(o.detail)))  # fmt: skip


def _last_seen(data: DataSet) -> dict[str, tuple[datetime, datetime]]:
    """Each device's first and latest report up to the load's end."""
    hi = slots_until(data, data.end)
    alive = data.alive[:, :hi]
    out: dict[str, tuple[datetime, datetime]] = {}
    for s, (d, _) in enumerate(data.series):
        row = alive[s]
        if not row.any():
            continue
        dev = data.devices[d]
        first = int(row.argmax())
        latest = hi - 1 - int(row[::-1].argmax())
        at = [data.start + timedelta(seconds=k * SLOT + dev.phase) for k in (first, latest)]
        if at[1] > data.end:  # the last slot's report is still to come
            at[1] -= timedelta(seconds=SLOT)
        out[dev.device_id] = (at[0], at[1])
    return out


def _camera_health(conn: psycopg.Connection[Any], data: DataSet, slots: int) -> None:
    """The probe's verdicts of 200 cameras every 5 minutes: ok while reporting, offline or the
    outage's picture fault while down."""
    cams = [s for s, (d, _) in enumerate(data.series) if data.devices[d].device_type == "camera"][
        :200
    ]
    rng = np.random.default_rng(7)
    end = data.end
    with (
        conn.cursor() as cur,
        cur.copy(
            "COPY camera_health (device_id, time, state, reason, fps, bitrate_kbps) FROM STDIN"
        ) as copy,
    ):
        for s in cams:
            dev = data.devices[data.series[s][0]]
            first = _slot(data, dev.created_at)
            slots_dev = min(slots, _slot(data, dev.retired_at)) if dev.retired_at else slots
            fps = rng.normal(25, 0.5, slots_dev)
            for k in range(first, slots_dev):
                at = data.start + timedelta(seconds=k * SLOT + dev.phase)
                if at > end:
                    break
                if data.alive[s, k]:
                    copy.write_row((dev.device_id, at, "ok", None, fps[k], 2048.0))
                else:
                    copy.write_row((dev.device_id, at, "offline", "timeout", None, None))
    row = conn.execute("SELECT count(*) FROM camera_health").fetchone()
    data.rows["camera_health"] = int(row[0]) if row else 0


_KECAMATAN: list[tuple[str, float, float]] = [
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


def timed(data: DataSet, name: str) -> Callable[[Callable[[], Any]], Any]:
    """Run a load step, note its seconds in data.seconds[name]."""

    def run(step: Callable[[], Any]) -> Any:
        began = time.perf_counter()
        result = step()
        data.seconds[name] = time.perf_counter() - began
        print(f"  {name}: {data.seconds[name]:.1f} s", flush=True)
        return result

    return run


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))
