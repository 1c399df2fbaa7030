"""A regency's worth of data for the wall's panels, written the way Pantau writes it: devices
registered through the registry over the 23 kecamatan (the simulator's devices and positions),
three hours of simulated readings every five minutes with the rollups refreshed by
pantau_refresh_rollups, arrivals, liveness states, open and closed outages (an area outage with
its grouped devices, a device outage, a value alarm), and two cameras with health checks and a
snapshot."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from devices import registry
from devices.models import DeviceIn
from ingest import simulator
from streams import cameras

AREA = "setu"  # the kecamatan that goes dark: it has one device of every kind
HIGH_GAUGE = "wl-setu-01"  # the river gauge over Siaga 2 (450 cm)
HIGH_GAUGE_LEVEL = 470.0
KINDS = ("wl", "rg", "aq", "tc", "sl")


def sensor_devices() -> list[simulator.Device]:
    """Three devices of different kinds in each kecamatan (five in the dark one), placed as the
    simulator places them: near the kecamatan's point, inside the regency."""
    rng = random.Random(11)
    out = []
    for k, (name, lat, lon, coast) in enumerate(simulator.KECAMATAN):
        place = simulator.slug(name)
        kinds = KINDS if place == AREA else tuple(KINDS[(k + j) % 5] for j in range(3))
        for kind in kinds:
            out.append(
                simulator.Device(
                    device_id=f"{kind}-{place}-01",
                    kind=kind,
                    kecamatan=name,
                    latitude=round(lat + rng.uniform(-0.01, 0.01), 5),
                    longitude=round(lon + rng.uniform(-0.01, 0.01), 5),
                    coast=coast,
                    fmt="json",
                    rng=random.Random(rng.random()),
                    base=rng.uniform(0.8, 1.2),
                )
            )
    return out


@dataclass(frozen=True)
class WallData:
    now: datetime
    devices: list[simulator.Device]
    down: list[str]  # device ids down
    high_gauge: str  # the river gauge over Siaga 2
    cameras: tuple[str, str]  # (frozen one with a snapshot, healthy one)


async def load(conn: psycopg.AsyncConnection, now: datetime) -> WallData:
    sensors = sensor_devices()
    for d in sensors:
        await registry.create_device(
            conn,
            DeviceIn.model_validate(
                {
                    "device_id": d.device_id,
                    "name": d.device_id.replace("-", " ").title(),
                    "device_type": d.device_type,
                    "kecamatan": d.kecamatan_id,
                    "latitude": d.latitude,
                    "longitude": d.longitude,
                }
            ),
            "test",
        )
    cams = ("cam-setu-01", "cam-babelan-01")
    for cam, kec in zip(cams, ("setu", "babelan"), strict=True):
        await registry.create_device(
            conn,
            DeviceIn.model_validate(
                {
                    "device_id": cam,
                    "name": f"CCTV {kec.title()}",
                    "device_type": "camera",
                    "kecamatan": kec,
                    "latitude": -6.3,
                    "longitude": 107.05,
                }
            ),
            "test",
        )
        async with conn.transaction():
            await cameras.set_camera(
                conn, cam, cameras.CameraIn(rtsp_url=f"rtsp://10.20.0.5/{cam}"), "test"
            )
    # Registered weeks ago, so a month's availability has something to judge.
    await conn.execute("UPDATE devices SET created_at = %s", (now - timedelta(days=40),))

    await conn.execute(
        "SELECT pantau_ensure_partitions('readings', %s::date, %s::date)",
        ((now - timedelta(days=1)).date(), (now + timedelta(days=1)).date()),
    )
    weather = simulator.Weather(random.Random(3))
    rows: list[tuple[str, str, datetime, float]] = []
    last: dict[str, datetime] = {}
    for step in range(36, -1, -1):  # every 5 minutes over three hours, oldest first
        at = now - timedelta(minutes=5 * step)
        weather.intensity = 30.0 if step < 12 else 0.0  # an hour of heavy rain just now
        weather.wetness = 2.0
        for d in sensors:
            values = simulator.sample(d, weather, at.timestamp())
            if d.kind == "rg":
                values = {"rain_mm": values["rain_mm"] * 5}  # five minutes' worth
            if d.device_id == HIGH_GAUGE:
                values = {"water_level_cm": HIGH_GAUGE_LEVEL - step}
            rows += [(d.device_id, metric, at, value) for metric, value in values.items()]
            last[d.device_id] = at
    copy_sql = "COPY readings (device_id, metric, time, value) FROM STDIN"
    async with conn.cursor() as cur, cur.copy(copy_sql) as copy:
        for row in rows:
            await copy.write_row(row)
    await conn.execute(
        "SELECT pantau_refresh_rollups(%s, %s)",
        (now - timedelta(hours=4), now + timedelta(minutes=1)),
    )
    for device_id, at in last.items():
        await conn.execute(
            "INSERT INTO device_last_seen (device_id, last_reading_at, last_received_at)"
            " VALUES (%s, %s, %s)",
            (device_id, at, at),
        )

    # Liveness: setu dark (its area outage), one device down elsewhere, one late, one paused,
    # one never judged; the rest up. Cameras: one frozen (down), one up.
    area_devices = [d.device_id for d in sensors if d.kecamatan_id == AREA]
    elsewhere_down = next(d.device_id for d in sensors if d.kecamatan_id == "cibitung")
    late = next(d.device_id for d in sensors if d.kecamatan_id == "babelan")
    paused = next(d.device_id for d in sensors if d.kecamatan_id == "tarumajaya")
    unknown = next(d.device_id for d in sensors if d.kecamatan_id == "sukatani")
    down = [*area_devices, elsewhere_down, cams[0]]
    states: dict[str, tuple[str, str | None]] = {d.device_id: ("up", None) for d in sensors}
    states |= {device_id: ("down", "silent") for device_id in area_devices}
    states |= {
        elsewhere_down: ("down", "offline:auth"),
        late: ("late", None),
        paused: ("paused", None),
        cams[0]: ("down", "frozen"),
        cams[1]: ("up", None),
    }
    del states[unknown]
    for device_id, (state, cause) in states.items():
        await conn.execute(
            "INSERT INTO device_liveness (device_id, state, cause, since) VALUES (%s, %s, %s, %s)",
            (device_id, state, cause, now - timedelta(minutes=50)),
        )

    area_id = await _outage(
        conn, "area", None, AREA, "area", "critical", now - timedelta(minutes=40),
        detail={"down": len(area_devices), "total": len(area_devices)},
    )  # fmt: skip
    kinds_of = {d.device_id: d.device_type for d in sensors} | dict.fromkeys(cams, "camera")
    for device_id in area_devices:
        await _outage(
            conn, "device", device_id, AREA, "silent", "warning", now - timedelta(minutes=45),
            device_type=kinds_of[device_id], parent_id=area_id,
        )  # fmt: skip
    await _outage(
        conn, "device", elsewhere_down, "cibitung", "offline:auth", "critical",
        now - timedelta(hours=2), device_type=kinds_of[elsewhere_down],
    )  # fmt: skip
    await _outage(
        conn, "device", cams[0], "setu", "frozen", "warning", now - timedelta(minutes=20),
        device_type="camera",
    )  # fmt: skip
    # History: closed outages within the month (availability), one per kind of device.
    for i, d in enumerate(sensors[:10]):
        await _outage(
            conn, "device", d.device_id, d.kecamatan_id, "silent", "warning",
            now - timedelta(days=3 + i, hours=5), device_type=d.device_type,
            ended_at=now - timedelta(days=3 + i),
        )  # fmt: skip
    await _outage(
        conn, "alarm", HIGH_GAUGE, AREA, "Siaga 2", "warning",
        now - timedelta(minutes=30), device_type="water_level", metric="water_level_cm",
        level="Siaga 2", detail={"value": HIGH_GAUGE_LEVEL, "raise_at": 450, "rank": 2},
    )  # fmt: skip

    for i, (cam, state) in enumerate(zip(cams, ("frozen", "ok"), strict=True)):
        for minutes in (3, 2, 1):
            await conn.execute(
                "INSERT INTO camera_health (time, device_id, state, reason, fps, bitrate_kbps)"
                " VALUES (%s, %s, %s, NULL, %s, %s)",
                (now - timedelta(minutes=minutes), cam, state, 25.0 - i, 2000.0),
            )
    await conn.execute(
        "INSERT INTO camera_snapshots (device_id, taken_at, file_name, bytes)"
        " VALUES (%s, %s, 'a.jpg', 51234)",
        (cams[0], now - timedelta(seconds=90)),
    )
    return WallData(now, sensors, down, HIGH_GAUGE, cams)


async def _outage(
    conn: psycopg.AsyncConnection,
    kind: str,
    device_id: str | None,
    kecamatan: str,
    cause: str,
    severity: str,
    started_at: datetime,
    *,
    device_type: str | None = None,
    metric: str | None = None,
    level: str | None = None,
    parent_id: int | None = None,
    ended_at: datetime | None = None,
    detail: dict[str, object] | None = None,
) -> int:
    cur = await conn.execute(
        "INSERT INTO outages (kind, device_id, kecamatan, device_type, metric, level, cause,"
        " severity, started_at, ended_at, parent_id, detail)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            kind, device_id, kecamatan, device_type, metric, level, cause, severity,
            started_at, ended_at, parent_id, json.dumps(detail or {}),
        ),
    )  # fmt: skip
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])
