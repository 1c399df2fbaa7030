"""What /wall shows, read from the `wall.*` views of migration 0013 (the same ones Grafana's panels
query, so the two walls never disagree) in one read-only transaction as the role `pantau_wall`,
plus a few of this process's own metrics. Every list is bounded; each says how many there are."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Literal

import psycopg
from prometheus_client import CollectorRegistry
from psycopg import sql
from psycopg.rows import dict_row
from pydantic import BaseModel, Field

from grafana.wall.tiles import GRID, place
from pantau.cliapp import WIB
from pantau.errors import PantauError

log = logging.getLogger(__name__)

ROLE = "pantau_wall"
MAX_ROWS = 200  # per list, at most
STATEMENT_TIMEOUT_MS = 10_000

TileState = Literal["area", "down", "late", "up", "unknown", "empty"]


class WallRoleMissing(PantauError):
    """The read-only role of migration 0013 does not exist (a migrating user without
    CREATEROLE): the wall refuses to read as anyone else."""


class Totals(BaseModel):
    total: int = Field(description="devices not retired")
    up: int
    late: int
    down: int
    paused: int = Field(description="inactive, in maintenance, or a camera not probed")
    unknown: int = Field(description="never judged yet")
    area_outages: int
    alarms: int = Field(description="open value alarms")


class PillarStatus(BaseModel):
    pillar: str
    pillar_name: str = Field(examples=["Lingkungan cerdas"])
    total: int
    up: int
    late: int
    down: int
    paused: int
    unknown: int


class KecamatanTile(BaseModel):
    kecamatan: str
    kecamatan_name: str
    label: str = Field(description="the name, with soft hyphens (U+00AD) where it may break")
    row: int = Field(description="the tile's row on the map, 0 = north")
    column: int = Field(description="the tile's column, 0 = west")
    state: TileState = Field(
        description="area (an open area outage), down (a device down), late, up, unknown "
        "(only paused or never judged devices) or empty (no device)"
    )
    state_label: str = Field(examples=["Gangguan wilayah"])
    total: int
    up: int
    late: int
    down: int
    paused: int
    unknown: int
    alarms: int
    area_since: datetime | None = Field(description="the area outage's start (WIB)")


class Outage(BaseModel):
    id: int
    kind: Literal["device", "area"]
    kecamatan: str
    kecamatan_name: str
    device_id: str | None
    device_name: str | None
    type_name: str | None
    cause: str | None
    cause_label: str | None = Field(examples=["luring: kata sandi ditolak"])
    severity: str
    severity_label: str
    since: datetime = Field(description="WIB")
    duration_seconds: int
    area_down: int | None = Field(description="an area outage: its devices down")
    area_total: int | None = Field(description="an area outage: its active devices")


class Outages(BaseModel):
    total: int = Field(description="open device and area outages, not counting those grouped")
    grouped: int = Field(description="device outages grouped under an open area outage")
    items: list[Outage] = Field(description="area outages first, then the most severe, oldest")


class Alarm(BaseModel):
    id: int
    device_id: str
    device_name: str
    kecamatan_name: str
    metric_label: str
    unit: str | None
    level: str | None = Field(examples=["Siaga 2"])
    severity: str
    severity_label: str
    value: float | None
    since: datetime


class Alarms(BaseModel):
    total: int
    items: list[Alarm] = Field(description="the most severe first")


class Level(BaseModel):
    name: str = Field(examples=["Siaga 3"])
    raise_at: float
    severity: str


class FloodGauge(BaseModel):
    device_id: str
    name: str
    kecamatan_name: str
    state: str
    state_label: str
    time: datetime | None = Field(description="the latest reading's time (WIB), within a day")
    level_cm: float | None
    level: str | None = Field(description="the alert level it holds now", examples=["Siaga 2"])
    severity: str | None
    levels: list[Level] = Field(description="the gauge's own levels, lowest first")


class FloodGauges(BaseModel):
    total: int
    items: list[FloodGauge] = Field(description="the highest level held first, then the fullest")


class CameraTile(BaseModel):
    device_id: str
    name: str
    kecamatan_name: str
    state: str
    state_label: str
    cause_label: str | None
    since: datetime | None
    picture: str | None = Field(description="the probe's last verdict: ok, frozen, black, ...")
    snapshot_age_seconds: int | None
    snapshot_path: str = Field(
        description="the picture (or its placeholder) at a capability URL on this server"
    )


class CameraTiles(BaseModel):
    total: int
    items: list[CameraTile] = Field(description="cameras in trouble first, then by name")


class Process(BaseModel):
    """This process's own view (another instance may see otherwise)."""

    mqtt_connected: bool | None
    database_up: bool | None
    spool_bytes: float | None = Field(description="readings waiting on disk for the database")
    spool_oldest_seconds: float | None
    workers_down: list[str] = Field(description="workers of this process not running now")


class Pipeline(BaseModel):
    last_arrival: datetime | None
    devices_reporting_5m: int
    readings_5m: int
    quarantined_2h: int
    alerts_pending: int = Field(description="alert events not delivered yet")
    cameras: int
    process: Process


class Wall(BaseModel):
    version: str = Field(description="the page's version: a page seeing another one reloads")
    title: str
    refresh_seconds: float
    generated_at: datetime = Field(description="the server's clock (WIB)")
    totals: Totals
    pillars: list[PillarStatus]
    kecamatan: list[KecamatanTile]
    outages: Outages
    alarms: Alarms
    flood: FloodGauges
    cameras: CameraTiles
    pipeline: Pipeline


_OUTAGES = """
SELECT id, kind, kecamatan, kecamatan_name, device_id, device_name, type_name, cause,
       cause_label, severity, severity_label, since, duration_seconds, area_down, area_total
FROM wall.current_outages WHERE parent_id IS NULL ORDER BY sort LIMIT %(limit)s
"""
_OUTAGE_COUNTS = """
SELECT count(*) FILTER (WHERE parent_id IS NULL) AS total,
       count(*) FILTER (WHERE parent_id IS NOT NULL) AS grouped
FROM wall.current_outages
"""
_ALARMS = """
SELECT id, device_id, device_name, kecamatan_name, metric_label, unit, level, severity,
       severity_label, value, since
FROM wall.active_alarms ORDER BY sort LIMIT %(limit)s
"""
_FLOOD = """
SELECT f.device_id, f.name, f.kecamatan_name, f.state, wall.state_label(f.state) AS state_label,
       f.time, f.level_cm, f.level, f.severity, coalesce(f.levels, '[]'::jsonb) AS levels
FROM wall.flood_levels f
ORDER BY array_position(ARRAY['critical', 'warning', 'info'], f.severity) NULLS LAST,
         f.level_cm / nullif((SELECT max((l ->> 'raise_at')::float8)
                              FROM jsonb_array_elements(f.levels) l), 0) DESC NULLS LAST,
         f.name, f.device_id
LIMIT %(limit)s
"""
_CAMERAS = """
SELECT device_id, name, kecamatan_name, state, state_label, cause_label, since, picture,
       snapshot_age_seconds, snapshot_path
FROM wall.camera_tiles
ORDER BY array_position(ARRAY['down', 'late', 'unknown', 'paused', 'up'], state),
         picture IS DISTINCT FROM 'ok' DESC, name, device_id
LIMIT %(limit)s
"""


async def read(
    conn: psycopg.AsyncConnection,
    *,
    limit: int,
    version: str,
    title: str,
    refresh_seconds: float,
    registry: CollectorRegistry | None = None,
) -> Wall:
    """Everything the wall shows, as of one snapshot of the database."""
    limit = max(1, min(limit, MAX_ROWS))
    args = {"limit": limit}
    async with conn.transaction():
        cur = conn.cursor(row_factory=dict_row)
        # One snapshot for every figure: the counts and the lists never disagree.
        await cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        try:
            await cur.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(ROLE)))
        except psycopg.errors.InvalidParameterValue as exc:  # "role ... does not exist"
            raise WallRoleMissing(
                f"the database role {ROLE} is missing: CREATE ROLE {ROLE} NOLOGIN, then "
                "`pantau db migrate` grants it (see README, /wall)"
            ) from exc
        await cur.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
        await cur.execute("SELECT now() AS now")
        now = (await _one(cur))["now"]

        await cur.execute("SELECT * FROM wall.status_totals")
        totals = Totals(**await _one(cur))
        await cur.execute("SELECT * FROM wall.status_by_pillar ORDER BY sort NULLS LAST, pillar")
        pillars = [PillarStatus(**row) for row in await cur.fetchall()]
        await cur.execute("SELECT * FROM wall.status_by_kecamatan ORDER BY kecamatan")
        kecamatan = _tiles(await cur.fetchall())

        await cur.execute(_OUTAGE_COUNTS)
        counts = await _one(cur)
        await cur.execute(_OUTAGES, args)
        outages = Outages(
            total=counts["total"],
            grouped=counts["grouped"],
            items=[Outage(**_wib(row)) for row in await cur.fetchall()],
        )
        await cur.execute(_ALARMS, args)
        alarms = Alarms(
            total=totals.alarms, items=[Alarm(**_wib(row)) for row in await cur.fetchall()]
        )
        await cur.execute("SELECT count(*) AS n FROM wall.flood_levels")
        flood_total = (await _one(cur))["n"]
        await cur.execute(_FLOOD, args)
        flood = FloodGauges(
            total=flood_total, items=[FloodGauge(**_wib(row)) for row in await cur.fetchall()]
        )
        await cur.execute("SELECT count(*) AS n FROM wall.camera_tiles")
        camera_total = (await _one(cur))["n"]
        await cur.execute(_CAMERAS, args)
        cameras = CameraTiles(
            total=camera_total, items=[CameraTile(**_wib(row)) for row in await cur.fetchall()]
        )
        await cur.execute("SELECT * FROM wall.pipeline")
        pipeline = Pipeline(**_wib(await _one(cur)), process=process_health(registry))
    return Wall(
        version=version,
        title=title,
        refresh_seconds=refresh_seconds,
        generated_at=now.astimezone(WIB),
        totals=totals,
        pillars=pillars,
        kecamatan=kecamatan,
        outages=outages,
        alarms=alarms,
        flood=flood,
        cameras=cameras,
        pipeline=pipeline,
    )


async def _one(cur: psycopg.AsyncCursor[dict[str, Any]]) -> dict[str, Any]:
    row = await cur.fetchone()
    assert row is not None  # noqa: S101 - an aggregate or a one-row view
    return row


def _wib(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.astimezone(WIB) if isinstance(v, datetime) else v for k, v in row.items()}


def _tiles(rows: list[dict[str, Any]]) -> list[KecamatanTile]:
    tiles = []
    unplaced = 0
    for row in rows:
        spot = place(row["kecamatan"], row["kecamatan_name"], unplaced)
        unplaced += row["kecamatan"] not in GRID
        tiles.append(
            KecamatanTile(
                **{k: v for k, v in _wib(row).items() if k in KecamatanTile.model_fields},
                label=spot.label,
                row=spot.row,
                column=spot.column,
            )
        )
    return tiles


def process_health(registry: CollectorRegistry | None) -> Process:
    """Read from this process's Prometheus registry (None: nothing known)."""
    if registry is None:
        return Process(
            mqtt_connected=None,
            database_up=None,
            spool_bytes=None,
            spool_oldest_seconds=None,
            workers_down=[],
        )

    def value(name: str) -> float | None:
        return registry.get_sample_value(name)

    def flag(name: str) -> bool | None:
        found = value(name)
        return None if found is None else found >= 1

    down = sorted(
        sample.labels["worker"]
        for family in registry.collect()
        if family.name == "pantau_worker_up"
        for sample in family.samples
        if sample.value < 1 and "worker" in sample.labels
    )
    return Process(
        mqtt_connected=flag("pantau_mqtt_connected"),
        database_up=flag("pantau_database_up"),
        spool_bytes=value("pantau_ingest_spool_bytes"),
        spool_oldest_seconds=value("pantau_ingest_spool_oldest_seconds"),
        workers_down=down,
    )
