"""The outage detector: each pass judges every registered device from its arrivals and its
reports (status topics, camera probes), opens and closes device and area outages, and writes
their alert events to the outbox, in one transaction.

A device is **up** while it reports within `late_factor` of its interval, **late** after that,
**down** (an outage, cause `silent`) after `down_factor`, or at once when it reports itself down
(`offline`, or a camera's `frozen`, `black`, `covered`...). A device that is down and reports
again must keep reporting for `recovery_factor` intervals before its outage ends (flapping
damped). A device not active in the registry, inside a maintenance window, or a camera whose
stream is not set or not enabled (nothing probes it), is **paused**: it never alerts, and an
outage it had ends. Its interval is the registry's, else a camera's probe interval, else the one
learned from its arrivals, else its type's. When `area_share` of a kecamatan's devices are down
(at least `area_min_devices`), one area outage groups their device outages: the area's event is
the message, not one per device.

One detector runs at a time across instances: passes run on a connection of their own that
holds a PostgreSQL advisory lock; when its holder dies the lock is released with its
connection, and another instance takes it within `detector_interval_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from devices.outages import alarms
from devices.outages.settings import OutagesSettings

log = logging.getLogger(__name__)

# pg_try_advisory_lock key of the detector: not pantau.migrate's (a second instance starting
# would wait for the migration lock as long as the first one detects).
LOCK_KEY = 0x646574656374  # "detect"
CHANNEL = "pantau_liveness"  # NOTIFY from pantau_report_status: judge at once


@dataclass(frozen=True)
class PassResult:
    """What one pass changed."""

    transitions: int
    opened: int
    closed: int
    areas_opened: int
    areas_closed: int
    alarms_opened: int = 0
    alarms_closed: int = 0


class DetectorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.leader = Gauge(
            "pantau_outage_detector_leader",
            "1 on the instance that holds the detector lock and judges devices, else 0",
            registry=registry,
        )
        self.last_pass = Gauge(
            "pantau_outage_detector_last_pass_timestamp_seconds",
            "Unix time at the end of the detector's last pass on this instance",
            registry=registry,
        )
        self.pass_seconds = Histogram(
            "pantau_outage_detector_pass_seconds",
            "Duration of one detector pass (one transaction)",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.transitions = Counter(
            "pantau_outage_transitions_total",
            "Device liveness state changes, by the state entered",
            ["state"],
            registry=registry,
        )
        self.opened = Counter(
            "pantau_outages_opened_total", "Outages opened, by kind", ["kind"], registry=registry
        )


# Judge every device and write the states that changed. Parameters: now, late and down
# factors, recovery factor and floor, the detector interval (a learned interval's floor).
# EXCEPT (a hashed set difference), not NOT EXISTS: on a liveness table without statistics the
# anti join was a nested loop over the rows being inserted (8 s for 20,000 new devices).
_NEW_DEVICES = """
INSERT INTO device_liveness (device_id)
SELECT device_id FROM devices EXCEPT SELECT device_id FROM device_liveness
ON CONFLICT (device_id) DO NOTHING
"""

# `judged` is MATERIALIZED: inlined, its maintenance-window EXISTS ran once per use of
# `paused` (18 subplans per device).
_JUDGE = """
WITH judged AS MATERIALIZED (
    SELECT l.device_id, l.state AS old_state, l.cause AS old_cause, l.recovering_since,
           l.learned_interval_seconds AS learned, l.last_arrival_at,
           l.reported_state, l.reported_cause, l.reported_at,
           d.expected_interval_seconds IS NULL AS learns,
           s.last_received_at,
           COALESCE(s.last_received_at, d.created_at) AS reference,
           COALESCE(d.expected_interval_seconds,
                    c.probe_interval_seconds,
                    GREATEST(l.learned_interval_seconds, %(floor)s),
                    t.expected_interval_seconds)::double precision AS interval_s,
           d.status <> 'active'
           OR (d.device_type = 'camera' AND c.enabled IS NOT TRUE)
           OR EXISTS (
               SELECT 1 FROM maintenance_windows w
               WHERE (w.device_id = d.device_id OR w.kecamatan = d.kecamatan)
                 AND w.starts_at <= %(now)s AND (w.ends_at IS NULL OR w.ends_at > %(now)s)
           ) AS paused,
           l.reported_state = 'down'
               AND (s.last_received_at IS NULL OR l.reported_at >= s.last_received_at)
               AS reported_down
    FROM device_liveness l
    JOIN devices d USING (device_id)
    JOIN device_types t ON t.id = d.device_type
    LEFT JOIN device_last_seen s USING (device_id)
    LEFT JOIN cameras c USING (device_id)
),
seen AS (
    SELECT *,
           CASE
               WHEN paused THEN 'paused'
               WHEN reported_down THEN 'down'
               WHEN %(now)s - reference > make_interval(secs => %(down)s * interval_s) THEN 'down'
               WHEN %(now)s - reference > make_interval(secs => %(late)s * interval_s) THEN 'late'
               ELSE 'up'
           END AS verdict,
           CASE WHEN reported_down THEN COALESCE(reported_cause, 'offline') ELSE 'silent' END
               AS verdict_cause
    FROM judged
),
next AS (
    SELECT *,
           CASE WHEN old_state = 'down' AND verdict = 'up'
                THEN COALESCE(recovering_since,
                              GREATEST(last_received_at,
                                       CASE WHEN reported_state = 'up' THEN reported_at END),
                              %(now)s)
           END AS recovering,
           CASE
               WHEN verdict = 'paused' OR old_state <> 'down' THEN verdict
               WHEN verdict <> 'up' THEN 'down'
               WHEN %(now)s - COALESCE(recovering_since, %(now)s)
                    >= make_interval(secs => GREATEST(%(recovery)s * interval_s, %(recovery_min)s))
                   THEN 'up'
               ELSE 'down'
           END AS new_state,
           CASE
               WHEN learns AND last_received_at > last_arrival_at THEN
                   CASE
                       WHEN learned IS NULL
                           THEN extract(epoch FROM last_received_at - last_arrival_at)
                       WHEN extract(epoch FROM last_received_at - last_arrival_at) < 3 * learned
                           THEN 0.8 * learned
                                + 0.2 * extract(epoch FROM last_received_at - last_arrival_at)
                       ELSE learned
                   END
               ELSE learned
           END AS new_learned
    FROM seen
)
UPDATE device_liveness l
SET state = n.new_state,
    cause = CASE
                WHEN n.new_state <> 'down' THEN NULL
                WHEN n.old_state = 'down' THEN n.old_cause
                ELSE n.verdict_cause
            END,
    since = CASE WHEN n.new_state <> n.old_state THEN %(now)s ELSE l.since END,
    recovering_since = CASE WHEN n.new_state = 'down' THEN n.recovering END,
    learned_interval_seconds = n.new_learned,
    last_arrival_at = CASE WHEN n.learns THEN n.last_received_at ELSE l.last_arrival_at END
FROM next n
WHERE l.device_id = n.device_id
  AND (n.new_state <> n.old_state
       OR n.recovering IS DISTINCT FROM l.recovering_since
       OR (n.learns AND n.last_received_at IS DISTINCT FROM l.last_arrival_at))
RETURNING l.device_id, n.old_state, l.state AS new_state, l.cause,
          n.reference, n.interval_s, n.reported_at, n.recovering AS recovered_from
"""

# Open a device outage for each device that went down: it started with the first report that
# did not come (silent) or when the device said so; grouped under its area's open outage.
_OPEN = """
INSERT INTO outages (kind, device_id, kecamatan, device_type, pillar, cause, severity,
                     started_at, parent_id)
SELECT 'device', d.device_id, d.kecamatan, d.device_type, d.pillar, c.cause, 'warning',
       LEAST(%(now)s, CASE WHEN c.cause = 'silent'
                           THEN c.reference + make_interval(secs => c.interval_s)
                           ELSE COALESCE(c.reported_at, %(now)s) END),
       a.id
FROM unnest(%(ids)s::text[], %(causes)s::text[], %(references)s::timestamptz[],
            %(intervals)s::double precision[], %(reported)s::timestamptz[])
     AS c(device_id, cause, reference, interval_s, reported_at)
JOIN devices d USING (device_id)
LEFT JOIN outages a ON a.kind = 'area' AND a.ended_at IS NULL AND a.kecamatan = d.kecamatan
ON CONFLICT DO NOTHING
RETURNING id, parent_id
"""

_CLOSE = """
UPDATE outages o
SET ended_at = GREATEST(o.started_at, LEAST(%(now)s, COALESCE(c.recovered_from, %(now)s)))
FROM unnest(%(ids)s::text[], %(recovered)s::timestamptz[]) AS c(device_id, recovered_from)
WHERE o.kind = 'device' AND o.ended_at IS NULL AND o.device_id = c.device_id
RETURNING o.id
"""

_ANNOUNCE = """
INSERT INTO alert_outbox (outage_id, event, receiver, status)
SELECT o.id, 'raised', r.receiver, CASE WHEN o.parent_id IS NULL THEN 'pending' ELSE 'grouped' END
FROM outages o, unnest(%(receivers)s::text[]) AS r(receiver)
WHERE o.id = ANY(%(ids)s)
ON CONFLICT DO NOTHING
"""

# A resolution goes to each receiver that was (or is about to be) told of the outage.
_RESOLVE = """
INSERT INTO alert_outbox (outage_id, event, receiver)
SELECT r.outage_id, 'resolved', r.receiver
FROM alert_outbox r
WHERE r.outage_id = ANY(%(ids)s) AND r.event = 'raised' AND r.status <> 'grouped'
ON CONFLICT DO NOTHING
"""

_AREA_COUNTS = """
SELECT d.kecamatan,
       count(*) FILTER (WHERE l.state NOT IN ('paused', 'unknown')) AS total,
       count(*) FILTER (WHERE l.state = 'down') AS down,
       a.id AS area_id
FROM devices d
JOIN device_liveness l USING (device_id)
LEFT JOIN outages a ON a.kind = 'area' AND a.ended_at IS NULL AND a.kecamatan = d.kecamatan
GROUP BY d.kecamatan, a.id
"""


class Detector:
    def __init__(self, settings: OutagesSettings, metrics: DetectorMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics

    async def run_pass(self, conn: psycopg.AsyncConnection, now: datetime) -> PassResult:
        """One pass, in one transaction on `conn` (which holds the detector lock)."""
        s = self.settings
        receivers = s.receivers()
        started = time.perf_counter()
        async with conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(_NEW_DEVICES)
            await cur.execute(
                _JUDGE,
                {
                    "now": now,
                    "late": s.late_factor,
                    "down": s.down_factor,
                    "recovery": s.recovery_factor,
                    "recovery_min": s.recovery_min_seconds,
                    "floor": s.detector_interval_seconds,
                },
            )
            changed = await cur.fetchall()
            went_down = [
                r for r in changed if r["new_state"] == "down" and r["old_state"] != "down"
            ]
            came_back = [
                r for r in changed if r["old_state"] == "down" and r["new_state"] != "down"
            ]
            opened: list[int] = []
            if went_down:
                await cur.execute(
                    _OPEN,
                    {
                        "now": now,
                        "ids": [r["device_id"] for r in went_down],
                        "causes": [r["cause"] for r in went_down],
                        "references": [r["reference"] for r in went_down],
                        "intervals": [r["interval_s"] for r in went_down],
                        "reported": [r["reported_at"] for r in went_down],
                    },
                )
                opened = [row["id"] for row in await cur.fetchall()]
                await cur.execute(_ANNOUNCE, {"ids": opened, "receivers": receivers})
            closed: list[int] = []
            if came_back:
                await cur.execute(
                    _CLOSE,
                    {
                        "now": now,
                        "ids": [r["device_id"] for r in came_back],
                        "recovered": [
                            r["recovered_from"] if r["new_state"] != "paused" else None
                            for r in came_back
                        ],
                    },
                )
                closed = [row["id"] for row in await cur.fetchall()]
                await cur.execute(_RESOLVE, {"ids": closed})
            areas_opened, areas_closed = await self._areas(cur, now, receivers)
            alarms_opened, alarms_closed = await alarms.evaluate(cur, now, receivers)
        if self.metrics:
            m = self.metrics
            m.pass_seconds.observe(time.perf_counter() - started)
            m.last_pass.set(time.time())
            for r in changed:
                if r["new_state"] != r["old_state"]:
                    m.transitions.labels(r["new_state"]).inc()
            m.opened.labels("device").inc(len(opened))
            m.opened.labels("area").inc(areas_opened)
            m.opened.labels("alarm").inc(alarms_opened)
        return PassResult(
            transitions=sum(1 for r in changed if r["new_state"] != r["old_state"]),
            opened=len(opened),
            closed=len(closed),
            areas_opened=areas_opened,
            areas_closed=areas_closed,
            alarms_opened=alarms_opened,
            alarms_closed=alarms_closed,
        )

    async def _areas(
        self, cur: psycopg.AsyncCursor[dict[str, Any]], now: datetime, receivers: list[str]
    ) -> tuple[int, int]:
        s = self.settings
        await cur.execute(_AREA_COUNTS)
        opened = closed = 0
        for row in await cur.fetchall():
            total, down, area = row["total"], row["down"], row["area_id"]
            share = down / total if total else 0.0
            detail = {"down": down, "total": total, "share": round(share, 4)}
            if area is None and down >= s.area_min_devices and share >= s.area_share:
                await cur.execute(
                    "INSERT INTO outages (kind, kecamatan, cause, severity, started_at, detail)"
                    " SELECT 'area', %(kec)s, 'area', 'critical',"
                    "        COALESCE(min(started_at), %(now)s), %(detail)s"
                    " FROM outages WHERE kind = 'device' AND ended_at IS NULL"
                    "   AND kecamatan = %(kec)s"
                    " RETURNING id",
                    {"kec": row["kecamatan"], "now": now, "detail": Jsonb(detail)},
                )
                found = await cur.fetchone()
                assert found is not None  # noqa: S101 - an aggregate always returns its row
                area_id = found["id"]
                await cur.execute(
                    "WITH children AS ("
                    "  UPDATE outages SET parent_id = %(area)s"
                    "  WHERE kind = 'device' AND ended_at IS NULL AND kecamatan = %(kec)s"
                    "  RETURNING id)"
                    " UPDATE alert_outbox SET status = 'grouped'"
                    " WHERE outage_id IN (SELECT id FROM children)"
                    "   AND event = 'raised' AND status = 'pending'",
                    {"area": area_id, "kec": row["kecamatan"]},
                )
                await cur.execute(_ANNOUNCE, {"ids": [area_id], "receivers": receivers})
                opened += 1
            elif area is not None and (
                total == 0 or down < s.area_min_devices or share < s.area_clear_share
            ):
                await cur.execute(
                    "UPDATE outages SET ended_at = %(now)s, detail = %(detail)s WHERE id = %(id)s",
                    {"now": now, "id": area, "detail": Jsonb(detail)},
                )
                await cur.execute(_RESOLVE, {"ids": [area]})
                # Devices still down after the area recovered are announced one by one now.
                await cur.execute(
                    "UPDATE alert_outbox SET status = 'pending', next_attempt_at = %(now)s"
                    " WHERE event = 'raised' AND status = 'grouped' AND outage_id IN ("
                    "   SELECT id FROM outages"
                    "   WHERE parent_id = %(id)s AND ended_at IS NULL)",
                    {"now": now, "id": area},
                )
                closed += 1
            elif area is not None:
                await cur.execute(
                    "UPDATE outages SET detail = %(detail)s"
                    " WHERE id = %(id)s AND detail <> %(detail)s",
                    {"id": area, "detail": Jsonb(detail)},
                )
        return opened, closed


async def hold_lock(conn: psycopg.AsyncConnection) -> bool:
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
    row = await cur.fetchone()
    return bool(row and row[0])


async def run_detector(
    connect: Callable[[], Awaitable[psycopg.AsyncConnection]],
    settings: OutagesSettings,
    metrics: DetectorMetrics,
    stop: asyncio.Event,
) -> None:
    """The detector worker: take the lock (or wait for it), then judge every
    `detector_interval_seconds`, or at once when a device reports its status. A lost
    connection is an error: the supervisor restarts the worker, which takes the lock again."""
    detector = Detector(settings, metrics)
    interval = settings.detector_interval_seconds
    while not stop.is_set():
        async with await connect() as conn:
            if not await hold_lock(conn):
                metrics.leader.set(0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
                continue
            metrics.leader.set(1)
            log.info("outage detector: this instance holds the lock and judges devices")
            await conn.execute(f"LISTEN {CHANNEL}")
            try:
                while not stop.is_set():
                    await detector.run_pass(conn, await _now(conn))
                    await _wait_for_news(conn, stop, interval)
            finally:
                metrics.leader.set(0)


async def _now(conn: psycopg.AsyncConnection) -> datetime:
    cur = await conn.execute("SELECT now()")
    row = await cur.fetchone()
    assert row is not None  # noqa: S101
    return row[0]  # type: ignore[no-any-return]


async def _wait_for_news(
    conn: psycopg.AsyncConnection, stop: asyncio.Event, seconds: float
) -> None:
    """Until the next pass is due, a device reports its status (NOTIFY), or `stop` is set
    (checked twice a second)."""
    deadline = time.monotonic() + seconds
    while not stop.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        async for _ in conn.notifies(timeout=min(remaining, 0.5), stop_after=1):
            return
