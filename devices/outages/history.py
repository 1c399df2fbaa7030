"""The outage history and the maintenance windows, as the API and the CLI read and change them.
The detector is the only writer of outages; windows are planned here (and opened by the
registry for a device set to `maintenance`). Times come back in WIB, as Pantau shows them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from devices import registry
from devices.models import KecamatanRef, Problem
from devices.readings import EARLIEST, LATEST
from pantau.cliapp import WIB
from pantau.ids import DEVICE_ID_PATTERN
from pantau.openapi import VISIBLE, not_given, one_line

Kind = Literal["device", "area", "alarm"]
State = Literal["current", "resolved", "all"]
Wib = Annotated[datetime, AfterValidator(lambda t: t.astimezone(WIB))]


class Outage(BaseModel):
    """One outage or value alarm; current while `ended_at` is null."""

    id: int
    kind: Kind
    device_id: str | None = Field(description="null for an area outage")
    device_name: str | None
    kecamatan: str
    type: str | None = Field(description="the device type; null for an area outage")
    pillar: str | None
    cause: str = Field(description="silent, offline, frozen...; 'area'; an alarm's level")
    severity: Literal["info", "warning", "critical"]
    level: str | None = Field(description="an alarm's level, e.g. 'Siaga 2'")
    metric: str | None = Field(description="the metric an alarm judges")
    started_at: Wib
    ended_at: Wib | None
    duration_seconds: float = Field(description="to now for a current one")
    parent_id: int | None = Field(description="the area outage a device outage is grouped under")
    grouped: int = Field(description="an area outage: how many device outages it groups")
    detail: dict[str, Any] = Field(description="area: down, total, share; alarm: value")


class OutageWithChildren(Outage):
    children: list[Outage] = Field(description="an area outage's grouped device outages")


class Window(BaseModel):
    """A maintenance window: the device (or every device of the kecamatan) never alerts in it,
    and its time is left out of availability."""

    id: int
    device_id: str | None
    kecamatan: str | None
    starts_at: Wib
    ends_at: Wib | None = Field(description="null: open until ended")
    reason: str
    created_by: str
    created_at: Wib
    current: bool = Field(description="in force now")


def _time_given(value: object) -> object:
    """A time as ISO 8601 text (or a datetime, from the CLI), never a bare number."""
    if not isinstance(value, str | datetime):
        raise ValueError("expected an ISO 8601 time with an offset, e.g. 2026-12-01T08:00+07:00")
    return value


Time = Annotated[datetime, BeforeValidator(_time_given)]
Reason = Annotated[
    str, Field(min_length=1, max_length=500, pattern=VISIBLE), AfterValidator(one_line)
]


class WindowIn(BaseModel):
    """A planned window for one device or a whole kecamatan (exactly one of the two)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"oneOf": [{"required": ["device_id"]}, {"required": ["kecamatan"]}]},
    )

    device_id: str = not_given(pattern=DEVICE_ID_PATTERN, examples=["wl-setu-01"])
    kecamatan: KecamatanRef = not_given(examples=["setu"], description="id or name")
    starts_at: Time = Field(description="ISO 8601 with an offset, years 1970 to 2999")
    ends_at: Time = Field(description="after starts_at")
    reason: Reason

    @model_validator(mode="after")
    def _checked(self) -> WindowIn:
        if (self.device_id is None) == (self.kecamatan is None):
            raise ValueError("give device_id or kecamatan, exactly one of the two")
        for name in ("starts_at", "ends_at"):
            value: datetime = getattr(self, name)
            if value.tzinfo is None:
                raise ValueError(f"{name}: expected an offset, e.g. 2026-12-01T08:00+07:00")
            try:
                inside = EARLIEST <= value.astimezone(UTC) < LATEST
            except OverflowError:
                inside = False
            if not inside:
                raise ValueError(f"{name}: expected a time from 1970 to 2999")
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


@dataclass(frozen=True)
class Query:
    kind: str | None = None
    kecamatan: str | None = None
    device_type: str | None = None
    state: str = "all"
    start: datetime | None = None
    end: datetime | None = None
    limit: int = 100
    offset: int = 0


_OUTAGE = """
SELECT o.id, o.kind, o.device_id, d.name AS device_name, o.kecamatan, o.device_type AS type,
       o.pillar, o.cause, o.severity, o.level, o.metric, o.started_at, o.ended_at,
       extract(epoch FROM COALESCE(o.ended_at, now()) - o.started_at)::float8
           AS duration_seconds,
       o.parent_id, o.detail,
       (SELECT count(*) FROM outages c WHERE c.parent_id = o.id)::int AS grouped
FROM outages o LEFT JOIN devices d USING (device_id)
"""
_LIST = (
    _OUTAGE
    + """
WHERE (%(kind)s::text IS NULL OR o.kind = %(kind)s)
  AND (%(kecamatan)s::text IS NULL OR o.kecamatan = %(kecamatan)s)
  AND (%(type)s::text IS NULL OR o.device_type = %(type)s)
  AND (%(state)s = 'all' OR (o.ended_at IS NULL) = (%(state)s = 'current'))
  AND (%(start)s::timestamptz IS NULL OR COALESCE(o.ended_at, 'infinity') > %(start)s)
  AND (%(end)s::timestamptz IS NULL OR o.started_at < %(end)s)
ORDER BY o.ended_at IS NULL DESC, o.started_at DESC, o.id DESC
LIMIT %(limit)s OFFSET %(offset)s
"""
)


async def outages(conn: psycopg.AsyncConnection, q: Query) -> list[Outage]:
    """Current ones first (newest start first), then the rest, newest first."""
    if q.kecamatan or q.device_type:
        resolved = registry.resolve_filters(
            registry.Filters(kecamatan=q.kecamatan, device_type=q.device_type),
            await registry.references(conn),
        )
    else:
        resolved = registry.Filters()
    if q.start and q.end and q.end <= q.start:
        raise registry.Invalid([Problem(field="to", message="expected a time after `from`")])
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        _LIST,
        {
            "kind": q.kind,
            "kecamatan": resolved.kecamatan,
            "type": resolved.device_type,
            "state": q.state,
            "start": q.start,
            "end": q.end,
            "limit": q.limit,
            "offset": q.offset,
        },
    )
    return [Outage(**row) for row in await cur.fetchall()]


async def outage(conn: psycopg.AsyncConnection, outage_id: int) -> OutageWithChildren:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(_OUTAGE + " WHERE o.id = %s", (outage_id,))
    row = await cur.fetchone()
    if row is None:
        raise registry.NotFound(f"no outage {outage_id}")
    await cur.execute(_OUTAGE + " WHERE o.parent_id = %s ORDER BY o.started_at, o.id", (outage_id,))
    return OutageWithChildren(**row, children=[Outage(**c) for c in await cur.fetchall()])


_WINDOW = """
SELECT w.id, w.device_id, w.kecamatan, w.starts_at, w.ends_at, w.reason, w.created_by,
       w.created_at, w.starts_at <= now() AND (w.ends_at IS NULL OR w.ends_at > now()) AS current
FROM maintenance_windows w
"""

_WINDOWS = (
    _WINDOW  # noqa: S608 - constants
    + """
WHERE (%(device)s::text IS NULL OR w.device_id = %(device)s)
  AND (%(kec)s::text IS NULL OR w.kecamatan = %(kec)s OR w.device_id IN (
        SELECT device_id FROM devices WHERE kecamatan = %(kec)s))
  AND (%(current)s::boolean IS NULL OR %(current)s = (
        w.starts_at <= now() AND (w.ends_at IS NULL OR w.ends_at > now())))
ORDER BY w.starts_at DESC, w.id DESC LIMIT %(limit)s
"""
)


async def windows(
    conn: psycopg.AsyncConnection,
    device_id: str | None = None,
    kecamatan: str | None = None,
    current: bool | None = None,
    limit: int = 500,
) -> list[Window]:
    """Windows, newest start first. `kecamatan` also finds its devices' own windows."""
    kecamatan_id = None
    if kecamatan:
        kecamatan_id = registry.resolve_filters(
            registry.Filters(kecamatan=kecamatan), await registry.references(conn)
        ).kecamatan
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        _WINDOWS,
        {"device": device_id, "kec": kecamatan_id, "current": current, "limit": limit},
    )
    return [Window(**row) for row in await cur.fetchall()]


async def _window(conn: psycopg.AsyncConnection, window_id: int) -> Window:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(_WINDOW + " WHERE w.id = %s", (window_id,))
    row = await cur.fetchone()
    if row is None:
        raise registry.NotFound(f"no maintenance window {window_id}")
    return Window(**row)


async def _audit(
    conn: psycopg.AsyncConnection, actor: str, action: str, before: Window | None, after: Window
) -> None:
    def data(w: Window | None) -> Jsonb | None:
        return Jsonb(w.model_dump(mode="json", exclude={"current"})) if w else None

    await conn.execute(
        "INSERT INTO audit_log (actor, action, entity, entity_id, before, after)"
        " VALUES (%s, %s, 'maintenance', %s, %s, %s)",
        (actor, action, str(after.id), data(before), data(after)),
    )


async def add_window(conn: psycopg.AsyncConnection, data: WindowIn, actor: str) -> Window:
    """Plan a window (audited); an unknown device is 404, an unknown kecamatan 422."""
    async with conn.transaction():
        kecamatan_id = None
        if data.device_id is not None:
            await registry.get_device(conn, data.device_id)
        else:
            kecamatan_id = registry.resolve_filters(
                registry.Filters(kecamatan=data.kecamatan), await registry.references(conn)
            ).kecamatan
        cur = await conn.execute(
            "INSERT INTO maintenance_windows (device_id, kecamatan, starts_at, ends_at, reason,"
            " created_by) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (data.device_id, kecamatan_id, data.starts_at, data.ends_at, data.reason, actor),
        )
        (window_id,) = await cur.fetchone() or (0,)
        window = await _window(conn, window_id)
        await _audit(conn, actor, "create", None, window)
    return window


class AlreadyEnded(registry.Exists):
    """Ending a window that has ended: nothing changes, and the caller is told."""


async def end_window(conn: psycopg.AsyncConnection, window_id: int, actor: str) -> Window:
    """End a window now (audited). One that has not started yet ends as it starts (cancelled,
    its record kept). One that has ended already is 409."""
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT 1 FROM maintenance_windows WHERE id = %s FOR UPDATE", (window_id,)
        )
        if await cur.fetchone() is None:
            raise registry.NotFound(f"no maintenance window {window_id}")
        before = await _window(conn, window_id)
        if before.ends_at is not None and before.ends_at <= datetime.now(WIB):
            raise AlreadyEnded(
                f"maintenance window {window_id} ended already ({before.ends_at:%Y-%m-%d %H:%M} "
                "WIB): nothing was changed"
            )
        await conn.execute(
            "UPDATE maintenance_windows"
            " SET ends_at = GREATEST(now(), starts_at + interval '1 microsecond') WHERE id = %s",
            (window_id,),
        )
        after = await _window(conn, window_id)
        await _audit(conn, actor, "end", before, after)
    return after
