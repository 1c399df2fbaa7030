"""The wall benchmark's readings: plausible values per metric, and the binary COPY blocks of
readings and of their 1 minute and 1 hour rollups, built with numpy one UTC hour at a time (in
arrival order, so a day's partition is laid out as ingestion lays it out: every device's
readings of an hour side by side)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from tests.bench.wall_data import PG_EPOCH, SLOT, DataSet, us

COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
COPY_TRAILER = b"\xff\xff"


def _text_field(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("!i", len(raw)) + raw


def _values(
    kind: str, metric: str, hours: np.ndarray, base: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
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


Chunk = tuple[int, int, np.ndarray, np.ndarray, np.ndarray]


def _chunks(data: DataSet, lo: int, hi: int, after: int) -> Iterator[Chunk]:
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
    start_us = us(data.start)
    end_us = us(data.end)
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
        reported = data.alive[:, a:b].T & (times <= end_us) & (times > after)
        yield a, b, times, values, reported
        a = b


def copy_blocks(
    data: DataSet, lo: int, hi: int, what: str, counted: list[int], after: int
) -> Iterator[bytes]:
    """COPY BINARY blocks of `what` ('readings', 'readings_1m' or 'readings_1h')."""
    groups = _groups(data)
    yield COPY_SIGNATURE
    raw_tail = np.dtype([("tl", ">i4"), ("t", ">i8"), ("vl", ">i4"), ("v", ">f8")])
    roll_tail = np.dtype(
        [
            ("tl", ">i4"),
            ("t", ">i8"),
            ("nl", ">i4"),
            ("n", ">i8"),
            ("al", ">i4"),
            ("a", ">f8"),
            ("il", ">i4"),
            ("i", ">f8"),
            ("xl", ">i4"),
            ("x", ">f8"),
        ]
    )
    for _, _, times, values, reported in _chunks(data, lo, hi, after):
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
