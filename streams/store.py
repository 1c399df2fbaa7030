"""The camera probes' database side: which cameras to probe (`load_cameras`), and each batch of
judged check intervals written in one transaction (`write_batch`): `camera_health` rows, the
readings `online` (0/1), `fps` and `bitrate_kbps`, `device_last_seen`, then each camera's
status for the outage detector (`pantau_report_status`).

The status comes last and is dated with the transaction's own `now()`, the arrival time just
written to `device_last_seen`: the detector honours a down report only when it is not older
than the device's last arrival, so a camera that keeps answering "frozen" stays down.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

import psycopg
from psycopg import errors

from pantau.arrivals import RECORD_ARRIVALS
from streams.report import CameraConfig, IntervalReport, Thresholds, Verdict
from streams.settings import StreamsSettings

log = logging.getLogger(__name__)


class Loaded(NamedTuple):
    cameras: list[CameraConfig]  # ordered by device id, at most max_cameras
    unprobed: int  # enabled cameras left out by max_cameras


_LOAD = """
SELECT c.device_id, c.rtsp_url, c.probe_interval_seconds, c.black_luma, c.covered_ratio,
       c.frozen_samples, c.bad_samples, c.version
FROM cameras c
JOIN cameras_to_probe USING (device_id)
WHERE (%s::text[] IS NULL OR c.device_id = ANY(%s::text[]))
ORDER BY c.device_id
LIMIT %s
"""
_COUNT = "SELECT count(*) FROM cameras_to_probe"


async def load_cameras(
    conn: psycopg.AsyncConnection, settings: StreamsSettings, only: list[str] | None = None
) -> Loaded:
    """The cameras to probe: registered as type `camera`, active or in maintenance (a camera
    being worked on is still watched; the detector pauses its alerts), enabled; with `only`,
    those of them (the ones this instance holds leases on). Thresholds a camera leaves NULL
    take the `[streams]` defaults."""
    cur = await conn.execute(_LOAD, (only, only, settings.max_cameras))
    rows = await cur.fetchall()
    cameras = [
        CameraConfig(
            device_id=device_id,
            rtsp_url=url,
            probe_interval_seconds=float(interval),
            thresholds=Thresholds(
                black_luma=settings.black_luma if black is None else float(black),
                covered_ratio=settings.covered_ratio if covered is None else float(covered),
                frozen_samples=settings.frozen_samples if frozen is None else int(frozen),
                bad_samples=settings.bad_samples if bad is None else int(bad),
            ),
            version=int(version),
        )
        for device_id, url, interval, black, covered, frozen, bad, version in rows
    ]
    unprobed = 0
    if only is None and len(cameras) >= settings.max_cameras:
        cur = await conn.execute(_COUNT)
        row = await cur.fetchone()
        unprobed = max(0, int(row[0]) - len(cameras)) if row else 0
    return Loaded(cameras, unprobed)


_KNOWN = "SELECT device_id FROM devices WHERE device_id = ANY(%s)"

_HEALTH = """
INSERT INTO camera_health (time, device_id, state, reason, connect_seconds, codec, width, height,
                           fps, bitrate_kbps, packets, keyframes, decode_errors, luma, contrast,
                           edge_density, sharpness, change)
SELECT * FROM unnest(%s::timestamptz[], %s::text[], %s::text[], %s::text[],
                     %s::double precision[], %s::text[], %s::integer[], %s::integer[],
                     %s::double precision[], %s::double precision[], %s::integer[],
                     %s::integer[], %s::integer[], %s::double precision[],
                     %s::double precision[], %s::double precision[], %s::double precision[],
                     %s::double precision[])
ON CONFLICT (device_id, time) DO NOTHING
"""
_READINGS = """
INSERT INTO readings (time, device_id, metric, value)
SELECT * FROM unnest(%s::timestamptz[], %s::text[], %s::text[], %s::double precision[])
ON CONFLICT DO NOTHING
"""
_STATUS = """
SELECT count(*) FILTER (WHERE pantau_report_status(u.device_id, u.up, u.cause, now()))
FROM unnest(%s::text[], %s::boolean[], %s::text[]) AS u (device_id, up, cause)
"""


@dataclass(frozen=True)
class Written:
    health_rows: int  # camera_health rows inserted
    readings: int  # readings inserted (a replayed interval's are already there)
    statuses: int  # statuses the database kept
    unknown: int  # reports of cameras no longer in the registry (not written)


async def write_batch(
    conn: psycopg.AsyncConnection,
    batch: Sequence[tuple[IntervalReport, Verdict]],
    reported_up: dict[str, str] | None = None,
) -> Written:
    """Write judged intervals (oldest first per camera) in one transaction; a missing daily
    partition of `readings` (plain PostgreSQL) is created and the batch written again.

    `reported_up` (the caller's, kept across batches: device -> cause of the last `up` this
    writer committed) spares the status of a camera still up for the same cause: each kept
    status wakes the outage detector for a pass (NOTIFY), and the arrival alone keeps an up
    device up. A down status is written every time: the detector honours it only while it is
    not older than the last arrival."""
    try:
        written, statuses = await _write(conn, batch, reported_up or {})
    except errors.CheckViolation:
        if not await _add_partitions(conn, batch):
            raise
        written, statuses = await _write(conn, batch, reported_up or {})
    if reported_up is not None:  # committed: remember what the detector now knows
        for device_id, (up, cause) in statuses.items():
            if up:
                reported_up[device_id] = cause
            else:
                reported_up.pop(device_id, None)
    return written


async def _write(
    conn: psycopg.AsyncConnection,
    batch: Sequence[tuple[IntervalReport, Verdict]],
    reported_up: dict[str, str],
) -> tuple[Written, dict[str, tuple[bool, str]]]:
    if not batch:
        return Written(0, 0, 0, 0), {}
    async with conn.transaction():
        cur = await conn.execute(_KNOWN, (sorted({r.device_id for r, _ in batch}),))
        known = {row[0] for row in await cur.fetchall()}
        items = [(r, v) for r, v in batch if r.device_id in known]
        unknown = len(batch) - len(items)
        if not items:
            return Written(0, 0, 0, unknown), {}
        cur = await conn.execute(_HEALTH, _health_columns(items))
        health_rows = cur.rowcount
        times, devices, metrics, values = _reading_columns(items)
        cur = await conn.execute(_READINGS, (times, devices, metrics, values))
        readings = cur.rowcount
        # Rollups: a batch that comes late (the writer fell behind) is noted for a refresh.
        await conn.execute("SELECT pantau_note_written(%s, %s)", (min(times), max(times)))
        latest: dict[str, tuple[IntervalReport, Verdict]] = {}
        for report, verdict in items:
            seen = latest.get(report.device_id)
            if seen is None or report.ended_at >= seen[0].ended_at:
                latest[report.device_id] = (report, verdict)
        ids = sorted(latest)  # the same lock order as every other writer of these rows
        await conn.execute(RECORD_ARRIVALS, (ids, [_time(latest[d][0].ended_at) for d in ids]))
        statuses: dict[str, tuple[bool, str]] = {}
        for device_id in ids:
            verdict = latest[device_id][1]
            if verdict.down or reported_up.get(device_id) != verdict.cause:
                statuses[device_id] = (not verdict.down, verdict.cause)
        kept = 0
        if statuses:
            told = sorted(statuses)
            cur = await conn.execute(
                _STATUS,
                (told, [statuses[d][0] for d in told], [statuses[d][1] for d in told]),
            )
            row = await cur.fetchone()
            kept = int(row[0]) if row else 0
    return Written(health_rows, readings, kept, unknown), statuses


def _time(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _health_columns(items: Sequence[tuple[IntervalReport, Verdict]]) -> list[list[Any]]:
    columns: list[list[Any]] = [[] for _ in range(18)]
    for r, v in items:
        row = (
            _time(r.ended_at),
            r.device_id,
            v.state,
            v.reason if v.reason is not None else r.reason,
            r.connect_seconds,
            r.codec,
            r.width,
            r.height,
            r.fps,
            r.bitrate_kbps,
            r.packets,
            r.keyframes,
            r.decode_errors,
            v.luma,
            v.contrast,
            v.edge_density,
            v.sharpness,
            v.change,
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns


def _reading_columns(
    items: Sequence[tuple[IntervalReport, Verdict]],
) -> tuple[list[datetime], list[str], list[str], list[float]]:
    times: list[datetime] = []
    devices: list[str] = []
    metrics: list[str] = []
    values: list[float] = []
    for r, _ in items:
        when = _time(r.ended_at)
        for metric, value in (
            ("online", 1.0 if r.online else 0.0),
            ("fps", r.fps),
            ("bitrate_kbps", r.bitrate_kbps),
        ):
            if value is not None:
                times.append(when)
                devices.append(r.device_id)
                metrics.append(metric)
                values.append(float(value))
    return times, devices, metrics, values


async def _add_partitions(
    conn: psycopg.AsyncConnection, batch: Sequence[tuple[IntervalReport, Verdict]]
) -> bool:
    """Plain PostgreSQL: create the batch's missing daily partitions; False when there is
    nothing to create (the refusal was something else)."""
    days: list[date] = sorted({_time(r.ended_at).date() for r, _ in batch})
    async with conn.transaction():
        cur = await conn.execute("SELECT to_regproc('pantau_ensure_partitions')")
        row = await cur.fetchone()
        if not row or row[0] is None:
            return False
        created = 0
        for day in days:
            cur = await conn.execute(
                "SELECT pantau_ensure_partitions('readings', %s, %s)", (day, day)
            )
            row = await cur.fetchone()
            created += int(row[0]) if row else 0
    if created:
        log.info("created %d missing daily partitions for camera readings", created)
    return created > 0


async def delete_old_health(conn: psycopg.AsyncConnection, retention_days: int) -> int:
    """Delete `camera_health` rows older than `retention_days`; how many went."""
    async with conn.transaction():
        cur = await conn.execute(
            "DELETE FROM camera_health WHERE time < now() - make_interval(days => %s)",
            (retention_days,),
        )
        return cur.rowcount
