"""Writing the wall benchmark's data set into a migrated (plain) PostgreSQL: the registry,
cameras, outages, windows, outbox, liveness and last arrivals; readings and both rollups with
binary COPY; camera health and snapshots; then, just before the timing, the readings since the
load (live ingestion goes on) with Pantau's own rollup refresh."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import psycopg

from tests.bench.wall_data import DAYS, SLOT, DataSet, slot_of, slots_until, us
from tests.bench.wall_series import copy_blocks


def copy_series(
    conn: psycopg.Connection[Any],
    data: DataSet,
    what: str,
    lo: int,
    hi: int,
    after: datetime | None = None,
) -> int:
    """Write slots [lo, hi) of every series to `what` with binary COPY, the reports after
    `after` only (when given); the rows written."""
    after_us = us(after) if after else -(2**62)
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
        for block in copy_blocks(data, lo, hi, what, counted, after_us):
            copy.write(block)
    return counted[0]


def load(conn: psycopg.Connection[Any], data: DataSet) -> None:
    """Write the data set into a migrated (plain) database; conn in autocommit."""
    first, last = data.start.date(), (data.end + timedelta(days=2)).date()
    for parent in ("readings", "readings_1m"):
        conn.execute("SELECT pantau_ensure_partitions(%s, %s, %s)", (parent, first, last))
    timed(data, "registry, cameras, outages, liveness")(lambda: _registry(conn, data))
    slots = slots_until(data, data.end)
    for what in ("readings", "readings_1m", "readings_1h"):
        data.rows[what] = timed(data, f"COPY {what}")(
            lambda table=what: copy_series(conn, data, table, 0, slots)
        )
    timed(data, "camera_health")(lambda: _camera_health(conn, data, slots))
    timed(data, "VACUUM ANALYZE")(lambda: conn.execute("VACUUM (ANALYZE)"))


def top_up(conn: psycopg.Connection[Any], data: DataSet, now: datetime) -> int:
    """Live ingestion goes on: the readings from the load's end to `now`, the rollups refreshed
    by Pantau's own pantau_refresh_rollups, device_last_seen moved on. The readings written."""
    since = data.end
    lo = slots_until(data, since) - 1  # the last slot's late reporters are still to come
    data.end = now
    hi = slots_until(data, now)
    written = copy_series(conn, data, "readings", lo, hi, after=since)
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
                copy.write_row(
                    (
                        d.device_id,
                        name,
                        d.device_type,
                        d.kecamatan,
                        d.pillar,
                        d.latitude,
                        d.longitude,
                        SLOT,
                        d.status,
                        d.created_at,
                        d.retired_at or d.created_at,
                        "bench",
                    )
                )
        with cur.copy(
            "COPY audit_log (at, actor, action, entity, entity_id, before, after) FROM STDIN"
        ) as copy:
            for d in data.devices:
                copy.write_row(
                    (
                        d.created_at,
                        "bench",
                        "create",
                        "device",
                        d.device_id,
                        None,
                        _json({"device_id": d.device_id, "status": "active"}),
                    )
                )
                if d.retired_at:
                    copy.write_row(
                        (
                            d.retired_at,
                            "bench",
                            "retire",
                            "device",
                            d.device_id,
                            _json({"status": "active"}),
                            _json({"status": "retired"}),
                        )
                    )
        cameras = [d for d in data.devices if d.device_type == "camera"]
        with cur.copy(
            "COPY cameras (device_id, rtsp_url, enabled, probe_interval_seconds) FROM STDIN"
        ) as copy:
            for n, d in enumerate(cameras):
                url = f"rtsp://10.20.{n // 250}.{n % 250 + 1}:554/s1"
                copy.write_row((d.device_id, url, n % 30 != 0, SLOT))
        # 30 river gauges with their own Siaga levels.
        gauges = [d for d in data.devices if d.device_type == "water_level"][:30]
        with cur.copy(
            "COPY device_alarm_levels (device_id, metric, rank, name, severity, raise_at,"
            " clear_at, source) FROM STDIN"
        ) as copy:
            for n, d in enumerate(gauges):
                for rank, (name, severity, at) in enumerate(
                    (
                        ("Siaga 3", "info", 250),
                        ("Siaga 2", "warning", 320),
                        ("Siaga 1", "critical", 400),
                    ),
                    start=1,
                ):
                    copy.write_row(
                        (
                            d.device_id,
                            "water_level_cm",
                            rank,
                            name,
                            severity,
                            at + n,
                            at + n - 20,
                            "BBWS Citarum (bench)",
                        )
                    )
        # Maintenance: 60 closed device windows, 3 kecamatan windows, the devices in maintenance.
        rng = np.random.default_rng(5)
        windows: list[tuple[str | None, str | None, datetime | None, datetime | None]] = []
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
                for age in range(24):
                    at = taken - timedelta(minutes=10 * age)
                    copy.write_row((d.device_id, at, f"{at:%Y%m%dT%H%M%S}.jpg", 85_000))
        with cur.copy(
            "COPY quarantine_hourly (source, hour, kept, summarised, reasons, last_at) FROM STDIN"
        ) as copy:
            for h in range(DAYS * 24):
                hour = data.start + timedelta(hours=h)
                for n, source in enumerate(("wl-setu-002", "tc-cibitung-004", "pantau/legacy")):
                    if (h + n) % (3 + n) == 0:
                        copy.write_row(
                            (
                                source,
                                hour,
                                1 + n,
                                4 * n,
                                _json({"decode": 1 + n}),
                                hour + timedelta(minutes=40),
                            )
                        )
    counts = conn.execute(
        "SELECT (SELECT count(*) FROM outages WHERE kind = 'device'),"
        " (SELECT count(*) FROM outages WHERE kind = 'area'),"
        " (SELECT count(*) FROM outages WHERE kind = 'alarm'),"
        " (SELECT count(*) FROM outages WHERE ended_at IS NULL),"
        " (SELECT count(*) FROM maintenance_windows), (SELECT count(*) FROM alert_outbox)"
    ).fetchone()
    assert counts is not None
    for name, n in zip(
        (
            "device outages",
            "area outages",
            "value alarms",
            "open outages and alarms",
            "maintenance windows",
            "alert_outbox",
        ),
        counts,
        strict=True,
    ):
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
            copy.write_row(
                (
                    o.kind,
                    d.device_id,
                    o.kecamatan,
                    d.device_type,
                    d.pillar or pillars.get(d.device_type, "environment"),
                    o.metric,
                    o.level,
                    o.cause,
                    o.severity,
                    o.started_at,
                    o.ended_at,
                    None if o.parent is None else ids[o.parent],
                    _json(o.detail),
                )
            )


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
            first = slot_of(data, dev.created_at)
            slots_dev = min(slots, slot_of(data, dev.retired_at)) if dev.retired_at else slots
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
