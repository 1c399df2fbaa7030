"""Availability over a period, per device and per pillar, kecamatan or device type: the figures
of the evaluation report (issue 9.7), for the CLI, the HTML/CSV report and the API alike.

Definition (README, "Availability and the evaluation report"), per device, over [from, to):
- expected time: the part of the period after the device was registered (`created_at`) and,
  for a retired device, before it was retired (the audit entry that set it retired; its
  `updated_at` when there is none), minus its maintenance windows and its kecamatan's;
- down time: its device outages (grouped under an area outage or not) inside the expected time;
- availability = 1 - down / expected, i.e. time up over time expected, maintenance excluded.
A group's availability sums its devices' times. The period never runs past `now`: a report of
today counts today so far. The definition is SQL with range types, in migration 0013
(`wall.device_availability_detail`, `wall.availability`), which the command-center wall reads
too, so the report and the wall never disagree; this module asks it and adds the report's rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

import orjson
import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel, Field

from devices.models import Problem
from devices.registry import Invalid
from pantau.cliapp import WIB

By = Literal["pillar", "kecamatan", "type"]
BYS: tuple[By, ...] = get_args(By)
# The longest period one report covers: two years (outages and windows are small tables).
MAX_SPAN = timedelta(days=731)
WORST = 10
TIMELINE_ROWS = 1000

# The definition itself is SQL, in migration 0013 (wall.device_availability_detail and
# wall.availability), which the command-center wall reads too: the report and the wall cannot
# disagree. %(from)s, %(to)s.
_PER_DEVICE = """
SELECT device_id, name, device_type, type_name, kecamatan, kecamatan_name, pillar, pillar_name,
       status, outages, registered_seconds, expected_seconds, down_seconds, availability
FROM wall.device_availability_detail(%(from)s, %(to)s)
ORDER BY device_id
"""

# The groups (%(by)s: pillar, kecamatan or type) and the whole ('all'), by label.
_GROUPS = """
SELECT grp AS key, label, devices, expected_seconds, down_seconds, availability
FROM wall.availability(%(from)s, %(to)s, %(by)s)
"""

_COVERAGE = """
SELECT p.id AS pillar, p.name_id AS pillar_name,
       count(d.device_id) AS active,
       count(d.device_id) FILTER (WHERE
           EXISTS (SELECT 1 FROM readings r WHERE r.device_id = d.device_id
                   AND r.time >= %(from)s AND r.time < %(to)s)
           OR EXISTS (SELECT 1 FROM readings_1h h WHERE h.device_id = d.device_id
                      AND h.bucket >= %(from)s AND h.bucket < %(to)s)
           OR EXISTS (SELECT 1 FROM device_last_seen s WHERE s.device_id = d.device_id
                      AND s.last_received_at >= %(from)s AND s.last_received_at < %(to)s)
       ) AS reporting
FROM pillars p
LEFT JOIN device_types t ON true
LEFT JOIN devices d ON d.status = 'active' AND d.created_at < %(to)s
                   AND d.device_type = t.id AND coalesce(d.pillar, t.pillar) = p.id
GROUP BY p.id, p.name_id
ORDER BY p.id
"""

_TIMELINE = """
SELECT o.id, o.kind, o.device_id, coalesce(d.name, o.device_id) AS name, o.kecamatan,
       coalesce(k.name, o.kecamatan) AS kecamatan_name, o.device_type, o.pillar, o.cause,
       o.severity, o.started_at, o.ended_at, o.parent_id, o.detail,
       extract(epoch FROM least(coalesce(o.ended_at, 'infinity'), %(to)s)
                          - greatest(o.started_at, %(from)s))::double precision
           AS seconds_in_period
FROM outages o
LEFT JOIN devices d ON d.device_id = o.device_id
LEFT JOIN kecamatan k ON k.id = o.kecamatan
WHERE o.kind IN ('device', 'area')
  AND o.started_at < %(to)s AND coalesce(o.ended_at, 'infinity') > %(from)s
ORDER BY o.started_at, o.id
LIMIT %(limit)s
"""


class DeviceAvailability(BaseModel):
    device_id: str
    name: str
    device_type: str | None
    type_name: str | None
    kecamatan: str | None
    kecamatan_name: str | None
    pillar: str | None
    pillar_name: str | None
    status: str
    outages: int = Field(description="device outages overlapping the period")
    registered_seconds: float = Field(description="the period's part the device was registered")
    expected_seconds: float = Field(description="registered time minus maintenance windows")
    down_seconds: float = Field(description="device outages inside the expected time")
    availability: float | None = Field(
        description="1 - down/expected, from 0 to 1; null when nothing was expected"
    )


class GroupAvailability(BaseModel):
    key: str | None = Field(description="the pillar, kecamatan or device type id")
    label: str = Field(description="its name (Bahasa Indonesia)")
    devices: int
    expected_seconds: float
    down_seconds: float
    availability: float | None


class TimelineOutage(BaseModel):
    id: int
    kind: Literal["device", "area"]
    device_id: str | None
    name: str | None
    kecamatan: str
    kecamatan_name: str
    cause: str
    severity: str
    started_at: datetime
    ended_at: datetime | None
    parent_id: int | None = Field(description="the area outage a device outage is grouped under")
    seconds_in_period: float
    detail: dict[str, Any]


class PillarCoverage(BaseModel):
    pillar: str
    pillar_name: str
    active: int = Field(description="active registered devices")
    reporting: int = Field(description="of them, those that reported at all in the period")


class Availability(BaseModel):
    """The report's figures; times in the answer are in WIB."""

    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to", description="the period's end, never future")
    by: By
    expected_seconds: float
    down_seconds: float
    availability: float | None = Field(description="over every device of the report")
    groups: list[GroupAvailability]
    worst: list[DeviceAvailability] = Field(
        description=f"the {WORST} lowest availabilities (then most down time)"
    )
    timeline: list[TimelineOutage] = Field(
        description=f"device and area outages in the period, oldest first, at most {TIMELINE_ROWS}"
    )
    coverage: list[PillarCoverage]
    devices: list[DeviceAvailability] = Field(default_factory=list, exclude=True)


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime


def period(start: datetime, end: datetime, now: datetime) -> Period:
    """Check a period; its end is cut at `now` (the future is neither up nor down)."""
    if start >= end:
        raise Invalid([Problem(field="from", message=f"{start.isoformat()} is not before to")])
    if end - start > MAX_SPAN:
        raise Invalid(
            [Problem(field="to", message=f"a report covers at most {MAX_SPAN.days} days")]
        )
    if start >= now:
        raise Invalid([Problem(field="from", message="the period starts in the future")])
    return Period(start, min(end, now))


def to_json(report: Availability) -> bytes:
    """The API's answer: times in WIB, with their offset."""
    data = report.model_dump(mode="python", by_alias=True)

    def wib(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.astimezone(WIB).isoformat()
        if isinstance(value, dict):
            return {k: wib(v) for k, v in value.items()}
        if isinstance(value, list):
            return [wib(v) for v in value]
        return value

    return orjson.dumps(wib(data))


async def availability(conn: psycopg.AsyncConnection, p: Period, by: By) -> Availability:
    """Every figure of the report over period `p`, grouped `by`."""
    args: dict[str, Any] = {"from": p.start, "to": p.end, "by": by, "limit": TIMELINE_ROWS}
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(_PER_DEVICE, args)
    devices = [DeviceAvailability(**row) for row in await cur.fetchall()]
    await cur.execute(_GROUPS, args)
    groups = [GroupAvailability(**row) for row in await cur.fetchall()]
    await cur.execute(_GROUPS, {**args, "by": "all"})
    (whole,) = await cur.fetchall()  # 'all' answers one row, also without devices
    await cur.execute(_TIMELINE, args)
    timeline = [TimelineOutage(**row) for row in await cur.fetchall()]
    await cur.execute(_COVERAGE, args)
    coverage = [PillarCoverage(**row) for row in await cur.fetchall()]
    judged = [d for d in devices if d.availability is not None]
    worst = sorted(judged, key=lambda d: (d.availability, -d.down_seconds, d.device_id))[:WORST]
    return Availability(
        start=p.start,
        end=p.end,
        by=by,
        expected_seconds=whole["expected_seconds"],
        down_seconds=whole["down_seconds"],
        availability=whole["availability"],
        groups=groups,
        worst=worst,
        timeline=timeline,
        coverage=coverage,
        devices=devices,
    )
