"""Value alarms: a metric's named, ordered levels (alarm_levels, overridden per device by
device_alarm_levels) judged from the readings as they are written, inside the detector's pass.

A level **holds** when its measure reaches `raise_at`: the metric's latest value (of the last
24 hours: an older one is no news), or the sum of the metric over `window_seconds` (rainfall:
many small readings make heavy rain). It is **reached** when it has held for
`min_duration_seconds`. A device has at most one open alarm per
metric, at the highest level reached; it stays while the measure is at or above its level's
`clear_at` (hysteresis), and when it falls below, the alarm steps down to the highest lower level
whose measure is still at or above that level's `clear_at`, or ends.

A level change closes the alarm and opens another rather than updating it: each level keeps its
own start, end and duration in the history, and the outbox announces each level once (one
`raised` event per outage and receiver), so a receiver learns of the new level, which an update
in place would never tell it.

Incremental: a pass evaluates only the devices whose `device_last_seen.last_received_at` moved
past the watermark (the last pass's time less a margin for writers committing late), those with
an open alarm (their windows slide with time) and those with a level pending its minimum
duration. Windows are anchored on the device's own clock shifted to
now (`now + last_reading_at - last_received_at`), so a gauge sending local time as UTC, or a
clock of 1970, still sums its last hour. Devices paused (not active, or in a maintenance window)
never raise alarms, and an alarm they had ends.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from devices.outages import detector as _outbox  # its outbox SQL; it imports this module back

# A writer's transaction takes its arrival time (now()) when it starts and commits later, within
# this margin: a pass at `now` has seen every arrival up to `now - margin`, and moves the
# watermark there. An arrival is judged by the passes of `margin` after it (harmless: a pass on
# unchanged readings changes nothing), and a stalled ingestion costs nothing.
WATERMARK_MARGIN = timedelta(seconds=10)

# The candidate devices' levels in force, for the (device, metric) pairs that need a decision:
# a level's measure reaches its lowest raise level, or an alarm is open, or a level is pending.
# Each measure (latest value, or a window's sum) is read once per device, metric and window;
# the other pairs (most devices, most of the time) end in SQL. Parameters: now, since (the
# watermark).
_LEVELS = """
WITH moved AS MATERIALIZED (
    SELECT s.device_id FROM device_last_seen s WHERE s.last_received_at > %(since)s
),
candidates AS (
    SELECT device_id, bool_or(moved) AS moved
    FROM (SELECT device_id, true AS moved FROM moved
          UNION ALL
          SELECT device_id, false FROM outages WHERE kind = 'alarm' AND ended_at IS NULL
          UNION ALL
          SELECT device_id, false FROM alarm_pending) c
    GROUP BY device_id
),
devs AS MATERIALIZED (
    SELECT d.device_id, d.device_type, c.moved, s.last_received_at,
           %(now)s + (s.last_reading_at - s.last_received_at) AS anchor,
           d.status <> 'active' OR EXISTS (
               SELECT 1 FROM maintenance_windows w
               WHERE (w.device_id = d.device_id OR w.kecamatan = d.kecamatan)
                 AND w.starts_at <= %(now)s AND (w.ends_at IS NULL OR w.ends_at > %(now)s)
           ) AS paused
    FROM candidates c
    JOIN devices d USING (device_id)
    LEFT JOIN device_last_seen s USING (device_id)
),
type_ladders AS (
    SELECT device_type, metric, window_seconds, min(raise_at) AS lowest
    FROM alarm_levels GROUP BY device_type, metric, window_seconds
),
own_ladders AS (
    SELECT device_id, metric, window_seconds, min(raise_at) AS lowest
    FROM device_alarm_levels GROUP BY device_id, metric, window_seconds
),
ladders AS (
    SELECT v.device_id, v.anchor, o.metric, o.window_seconds, o.lowest
    FROM devs v JOIN own_ladders o USING (device_id)
    WHERE NOT v.paused
    UNION ALL
    SELECT v.device_id, v.anchor, t.metric, t.window_seconds, t.lowest
    FROM devs v JOIN type_ladders t ON t.device_type = v.device_type
    WHERE NOT v.paused
      AND NOT EXISTS (SELECT 1 FROM device_alarm_levels o
                      WHERE o.device_id = v.device_id AND o.metric = t.metric)
),
measured AS MATERIALIZED (
    SELECT g.device_id, g.metric, g.window_seconds, g.lowest,
           CASE WHEN g.window_seconds IS NULL THEN
                    (SELECT r.value FROM readings r
                     WHERE r.device_id = g.device_id AND r.metric = g.metric
                       AND r.time > g.anchor - interval '1 day'
                     ORDER BY r.time DESC LIMIT 1)
                ELSE
                    (SELECT COALESCE(sum(r.value), 0) FROM readings r
                     WHERE r.device_id = g.device_id AND r.metric = g.metric
                       AND r.time > g.anchor - make_interval(secs => g.window_seconds)
                       AND r.time <= g.anchor)
           END AS value
    FROM ladders g
),
wanted AS (
    SELECT device_id, metric FROM measured WHERE value >= lowest
    UNION
    SELECT device_id, metric FROM outages WHERE kind = 'alarm' AND ended_at IS NULL
    UNION
    SELECT device_id, metric FROM alarm_pending
)
SELECT v.device_id, v.paused, v.moved, v.last_received_at, w.metric, l.rank, l.name,
       l.severity, l.raise_at, l.clear_at, l.window_seconds, l.min_duration_seconds, m.value
FROM wanted w
JOIN devs v USING (device_id)
JOIN LATERAL (
    SELECT o.rank, o.name, o.severity, o.raise_at, o.clear_at, o.window_seconds,
           o.min_duration_seconds
    FROM device_alarm_levels o WHERE o.device_id = v.device_id AND o.metric = w.metric
    UNION ALL
    SELECT t.rank, t.name, t.severity, t.raise_at, t.clear_at, t.window_seconds,
           t.min_duration_seconds
    FROM alarm_levels t
    WHERE t.device_type = v.device_type AND t.metric = w.metric
      AND NOT EXISTS (SELECT 1 FROM device_alarm_levels o
                      WHERE o.device_id = v.device_id AND o.metric = w.metric)
) l ON true
LEFT JOIN measured m ON m.device_id = v.device_id AND m.metric = w.metric
                    AND m.window_seconds IS NOT DISTINCT FROM l.window_seconds
ORDER BY v.device_id, w.metric, l.rank
"""

_OPEN_ALARMS = """
SELECT id, device_id, metric, started_at, detail
FROM outages WHERE kind = 'alarm' AND ended_at IS NULL
"""

_CLOSE = """
UPDATE outages o
SET ended_at = GREATEST(o.started_at, c.ended_at)
FROM unnest(%(ids)s::bigint[], %(ended)s::timestamptz[]) AS c(id, ended_at)
WHERE o.id = c.id AND o.ended_at IS NULL
RETURNING o.id
"""

_OPEN = """
INSERT INTO outages (kind, device_id, kecamatan, device_type, pillar, metric, level, cause,
                     severity, started_at, detail)
SELECT 'alarm', d.device_id, d.kecamatan, d.device_type, d.pillar, a.metric, a.level, a.level,
       a.severity, a.started_at, a.detail
FROM unnest(%(devices)s::text[], %(metrics)s::text[], %(levels)s::text[],
            %(severities)s::text[], %(started)s::timestamptz[], %(details)s::jsonb[])
     AS a(device_id, metric, level, severity, started_at, detail)
JOIN devices d USING (device_id)
ON CONFLICT DO NOTHING
RETURNING id
"""


@dataclass(frozen=True)
class _Level:
    rank: int
    name: str
    severity: str
    raise_at: float
    clear_at: float
    window_seconds: int | None
    min_duration_seconds: int
    value: float | None

    def holds(self) -> bool:
        return self.value is not None and self.value >= self.raise_at

    def kept(self) -> bool:
        return self.value is not None and self.value >= self.clear_at


@dataclass
class _Changes:
    close_ids: list[int]
    close_at: list[datetime]
    opens: list[dict[str, Any]]
    pending: dict[tuple[str, str, int], datetime]


async def evaluate(
    cur: psycopg.AsyncCursor[dict[str, Any]], now: datetime, receivers: list[str]
) -> tuple[int, int]:
    """Judge the value alarms of the devices with news, in the caller's transaction (the
    detector's pass); returns (alarms opened, alarms closed)."""
    # Small index-driven queries: compiling them (JIT, chosen on a fresh table's wild row
    # estimates) costs seconds and saves nothing.
    await cur.execute("SET LOCAL jit = off")
    await cur.execute(
        "UPDATE alarm_watermark w SET evaluated_to = GREATEST(w.evaluated_to, %s)"
        " FROM alarm_watermark prev RETURNING prev.evaluated_to",
        (now - WATERMARK_MARGIN,),
    )
    mark = await cur.fetchone()
    assert mark is not None  # noqa: S101 - the migration inserts the one row
    await cur.execute(_LEVELS, {"now": now, "since": mark["evaluated_to"]})
    rows = await cur.fetchall()
    await cur.execute(_OPEN_ALARMS)
    open_alarms = {(r["device_id"], r["metric"]): r for r in await cur.fetchall()}
    await cur.execute("SELECT device_id, metric, rank, since FROM alarm_pending")
    pending = {(r["device_id"], r["metric"], r["rank"]): r["since"] for r in await cur.fetchall()}

    grouped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[(row["device_id"], row["metric"])].append(row)
    changes = _Changes([], [], [], {})
    for key in grouped.keys() | open_alarms.keys():
        _judge(key, grouped.get(key, []), open_alarms.get(key), pending, now, changes)

    closed: list[int] = []
    if changes.close_ids:
        await cur.execute(_CLOSE, {"ids": changes.close_ids, "ended": changes.close_at})
        closed = [r["id"] for r in await cur.fetchall()]
        await cur.execute(_outbox._RESOLVE, {"ids": closed})
    opened: list[int] = []
    if changes.opens:
        o = changes.opens
        await cur.execute(
            _OPEN,
            {
                "devices": [a["device_id"] for a in o],
                "metrics": [a["metric"] for a in o],
                "levels": [a["level"] for a in o],
                "severities": [a["severity"] for a in o],
                "started": [a["started_at"] for a in o],
                "details": [Jsonb(a["detail"]) for a in o],
            },
        )
        opened = [r["id"] for r in await cur.fetchall()]
        await cur.execute(_outbox._ANNOUNCE, {"ids": opened, "receivers": receivers})
    if changes.pending != pending:
        await cur.execute("DELETE FROM alarm_pending")
        if changes.pending:
            keys = list(changes.pending)
            await cur.execute(
                "INSERT INTO alarm_pending (device_id, metric, rank, since)"
                " SELECT * FROM unnest(%s::text[], %s::text[], %s::integer[], %s::timestamptz[])",
                (
                    [k[0] for k in keys],
                    [k[1] for k in keys],
                    [k[2] for k in keys],
                    list(changes.pending.values()),
                ),
            )
    return len(opened), len(closed)


def _judge(
    key: tuple[str, str],
    rows: list[dict[str, Any]],
    alarm: dict[str, Any] | None,
    pending: dict[tuple[str, str, int], datetime],
    now: datetime,
    changes: _Changes,
) -> None:
    """Decide one (device, metric): which level is in force, and what changes."""
    device_id, metric = key
    if rows and rows[0]["paused"]:
        if alarm is not None:
            changes.close_ids.append(alarm["id"])
            changes.close_at.append(now)
        return
    levels = [
        _Level(
            r["rank"],
            r["name"],
            r["severity"],
            r["raise_at"],
            r["clear_at"],
            r["window_seconds"],
            r["min_duration_seconds"],
            r["value"],
        )
        for r in rows
    ]
    # When it changed: the arrival that brought the news, or now (a window slid).
    at = now
    if rows and rows[0]["moved"] and rows[0]["last_received_at"] is not None:
        at = min(now, rows[0]["last_received_at"])

    reached: dict[int, datetime] = {}
    for level in levels:
        if not level.holds():
            continue
        if level.min_duration_seconds == 0:
            reached[level.rank] = at
            continue
        since = pending.get((device_id, metric, level.rank), at)
        if now - since >= timedelta(seconds=level.min_duration_seconds):
            reached[level.rank] = since
        changes.pending[(device_id, metric, level.rank)] = since

    current = alarm["detail"].get("rank", 0) if alarm is not None else 0
    in_force = {level.rank: level for level in levels}
    higher = [rank for rank in reached if rank > current]
    target: _Level | None
    if higher:
        target = in_force[max(higher)]
        started = reached[target.rank]
    elif alarm is not None and not (current in in_force and in_force[current].kept()):
        lower = [lv for lv in levels if lv.rank < current and lv.kept()]
        target = max(lower, key=lambda lv: lv.rank) if lower else None
        started = at
    else:
        return
    if target is not None:
        for rank in [r for r in list(changes.pending) if r[:2] == key and r[2] <= target.rank]:
            del changes.pending[rank]
    if alarm is not None:
        changes.close_ids.append(alarm["id"])
        changes.close_at.append(started)
    if target is not None:
        changes.opens.append(
            {
                "device_id": device_id,
                "metric": metric,
                "level": target.name,
                "severity": target.severity,
                "started_at": started,
                "detail": {
                    "value": target.value,
                    "raise_at": target.raise_at,
                    "clear_at": target.clear_at,
                    "window": target.window_seconds,
                    "rank": target.rank,
                },
            }
        )
