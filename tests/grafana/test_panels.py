"""Every PostgreSQL panel's SQL, expanded as Grafana expands it (macros, the dashboard's default
range, its variables), run against a real PostgreSQL holding a regency's worth of data, through
the read-only role pantau_wall: rows come back with the columns and types the panel reads, and
every code it shows has its Indonesian word. No Grafana server exists here: this is how the
dashboards are tested."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from grafana import macros
from grafana.dashboards import build_all, dinding
from grafana.export import to_json
from grafana.panels import PanelQuery, panel_queries
from pantau import migrate
from pantau.embedded import PostgresCluster
from pantau.regency import LATITUDE, LONGITUDE
from tests.grafana import wall_data

NUMERIC = {20, 21, 23, 700, 701, 1700}  # int8, int2, int4, float4, float8, numeric
TEXT = {25, 1043}
TIMESTAMPTZ = 1184
PANTAU_URL = "http://pantau.test:8080"
POSTGRES_QUERIES = [q for q in panel_queries() if q.datasource == "postgres"]


def _id(q: PanelQuery) -> str:
    return f"{q.dashboard_uid}:{q.panel_title}:{q.ref_id}"


@pytest.fixture(scope="module")
def wall_db(postgres_cluster: PostgresCluster) -> Iterator[tuple[str, wall_data.WallData]]:
    """One database for the module, migrated and loaded once (the panels only read it)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    postgres_cluster.create_database(name)
    dsn = postgres_cluster.dsn(name)

    async def setup() -> wall_data.WallData:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await migrate.migrate(conn, "plain")
            return await wall_data.load(conn, datetime.now(UTC))

    try:
        yield dsn, asyncio.run(setup())
    finally:
        postgres_cluster.drop_database(name)


@pytest.fixture(scope="module")
def panels_json() -> dict[tuple[str, str], dict[str, Any]]:
    """Each panel as the exported dashboard has it, by (dashboard uid, title)."""
    out = {}
    for board in build_all(PANTAU_URL):
        data = json.loads(to_json(board))
        for panel in data["panels"]:
            out[(data["uid"], panel["title"])] = panel
    return out


async def _run(dsn: str, sql: str) -> tuple[list[tuple[str, int]], list[tuple[Any, ...]]]:
    async with (
        await psycopg.AsyncConnection.connect(dsn) as conn,
        conn.transaction(force_rollback=True),
    ):
        await conn.execute("SET LOCAL ROLE pantau_wall")
        cur = await conn.execute(sql)  # type: ignore[arg-type]
        assert cur.description is not None
        columns = [(c.name, c.type_code) for c in cur.description]
        return columns, await cur.fetchall()


async def _variables(dsn: str, now: datetime) -> dict[str, macros.VariableValue]:
    """The Kecamatan dashboard's variables as Grafana sets them: the dark kecamatan, and "All"
    of the types its variable query offers there; the Kamera dashboard's Pantau address."""
    variables: dict[str, macros.VariableValue] = {
        "kecamatan": wall_data.AREA,
        "pantau_url": PANTAU_URL,
    }
    tipe = next(q for q in POSTGRES_QUERIES if q.panel_type == "variable" and q.ref_id == "tipe")
    _, rows = await _run(dsn, tipe.expand(variables, now=now))
    variables["tipe"] = [r[0] for r in rows]
    return variables


@pytest.mark.parametrize("query", POSTGRES_QUERIES, ids=_id)
async def test_every_postgres_panel_returns_what_its_panel_reads(
    wall_db: tuple[str, wall_data.WallData],
    panels_json: dict[tuple[str, str], dict[str, Any]],
    query: PanelQuery,
) -> None:
    dsn, data = wall_db
    variables = await _variables(dsn, data.now)
    sql = query.expand(variables, now=data.now)
    assert set(query.variables) <= set(variables), query.variables
    assert "$" not in sql.replace("$__", ""), sql  # every variable expanded
    columns, rows = await _run(dsn, sql)
    names = [name for name, _ in columns]
    types = dict(columns)
    assert rows, f"{_id(query)} returned no rows:\n{sql}"
    if query.panel_type == "variable":
        assert names == ["__value", "__text"]
        assert all(types[n] in TEXT for n in names)
        return
    panel = panels_json[(query.dashboard_uid, query.panel_title)]
    overrides = {
        o["matcher"]["options"]: {p["id"]: p.get("value") for p in o["properties"]}
        for o in panel["fieldConfig"]["overrides"]
        if o["matcher"]["id"] == "byName"
    }
    assert set(overrides) <= set(names), f"overrides name missing columns: {names}"
    for name, props in overrides.items():
        for mapping in props.get("mappings") or []:
            _assert_mapped(rows, names.index(name), mapping["options"], name)
    if query.format == "time_series":
        _assert_time_series(names, types, rows)
    elif query.panel_type == "table":
        assert set(names) == set(overrides), "every column of a table has an Indonesian header"
    elif query.panel_type == "geomap":
        _assert_map(panel, names, types, rows)
    elif query.panel_type == "bargauge":
        shown = re.fullmatch(
            r"\$\{__data\.fields\.(\w+)\}", panel["fieldConfig"]["defaults"]["displayName"]
        )
        assert shown, panel["fieldConfig"]["defaults"]["displayName"]
        assert types[shown[1]] in TEXT, names
        assert any(t in NUMERIC for n, t in columns if n != shown[1]), columns
    elif query.panel_type == "stat":
        if panel["options"]["reduceOptions"].get("fields") == "/.*/":  # a state shown as a word
            for mapping in panel["fieldConfig"]["defaults"]["mappings"]:
                _assert_mapped(rows, 0, mapping["options"], names[0])
        else:
            assert all(t in NUMERIC for _, t in columns), columns
            assert len(rows) == 1, rows  # one number per tile


def _assert_mapped(
    rows: list[tuple[Any, ...]], index: int, options: dict[str, Any], name: str
) -> None:
    values = {r[index] for r in rows} - {None}
    assert values <= set(options), f"{name}: {values - set(options)} have no word"


def _assert_time_series(
    names: list[str], types: dict[str, int], rows: list[tuple[Any, ...]]
) -> None:
    assert names[0] == "time", names
    assert types["time"] == TIMESTAMPTZ, types
    times = [r[0] for r in rows]
    assert times == sorted(times), "Grafana needs time series sorted by time"
    for name in names[1:]:
        assert types[name] in (TEXT if name == "metric" else NUMERIC), (name, types[name])


def _assert_map(
    panel: dict[str, Any], names: list[str], types: dict[str, int], rows: list[tuple[Any, ...]]
) -> None:
    layer = panel["options"]["layers"][0]
    lat, lon = layer["location"]["latitude"], layer["location"]["longitude"]
    assert types[lat] in NUMERIC, types
    assert types[lon] in NUMERIC, types
    colour = layer["config"]["style"]["color"]["field"]
    assert colour in names
    for row in rows:
        point = (row[names.index(lat)], row[names.index(lon)])
        assert LATITUDE[0] <= point[0] <= LATITUDE[1], point
        assert LONGITUDE[0] <= point[1] <= LONGITUDE[1], point
    for mapping in panel["fieldConfig"]["defaults"]["mappings"]:
        _assert_mapped(rows, names.index(colour), mapping["options"], colour)


async def test_the_wall_shows_the_loaded_situation(
    wall_db: tuple[str, wall_data.WallData],
) -> None:
    """Not only shapes: the figures are the situation loaded (area outage first, the gauge over
    Siaga 2, the camera snapshot at Pantau's address)."""
    dsn, data = wall_db
    variables = await _variables(dsn, data.now)
    by_title = {(q.dashboard_uid, q.panel_title): q for q in POSTGRES_QUERIES}

    _, rows = await _run(dsn, by_title[("pantau-dinding", "Status perangkat")].expand(now=data.now))
    total, _up, late, down, paused, unknown, areas, alarms = rows[0]
    assert total == len(data.devices) + 2
    assert (down, late, paused, unknown, areas, alarms) == (len(data.down), 1, 1, 1, 1, 1)

    _, rows = await _run(
        dsn, by_title[("pantau-dinding", "Gangguan saat ini")].expand(now=data.now)
    )
    assert rows[0][0] == "area"
    assert rows[0][2] == "5 dari 5 perangkat mati"
    assert all(r[0] == "device" for r in rows[1:])
    assert len(rows) == 3  # the area (its devices grouped under it), cibitung's, the camera's

    columns, rows = await _run(
        dsn, by_title[("pantau-kamera", "Kamera CCTV")].expand(variables, now=data.now)
    )
    names = [name for name, _ in columns]
    snapshot = {r[names.index("name")]: r[names.index("snapshot")] for r in rows}
    assert snapshot["CCTV Setu"].startswith(
        f"{PANTAU_URL}/wall/cameras/cam-setu-01/snapshot.jpg?key="
    )

    _, rows = await _run(
        dsn, by_title[("pantau-kecamatan", "Pos pantau air")].expand(variables, now=data.now)
    )
    assert rows[0][:3] == (wall_data.HIGH_GAUGE.replace("-", " ").title(), 470.0, "Siaga 2")


async def test_flood_levels_over_a_week_come_from_the_hourly_rollups(
    wall_db: tuple[str, wall_data.WallData],
) -> None:
    dsn, data = wall_db
    flood = next(q for q in POSTGRES_QUERIES if q.text == dinding.FLOOD_SQL.strip())
    week = macros.expand(
        flood.text, start=data.now - timedelta(days=7), end=data.now, interval=timedelta(hours=1)
    )
    _, rows = await _run(dsn, week)
    buckets = {r[0] for r in rows}
    assert buckets
    assert all(b.minute == 0 for b in buckets), buckets  # hourly
    _, rows = await _run(dsn, flood.expand(now=data.now))
    assert any(r[0].minute != 0 for r in rows)  # six hours: the 1-minute rollups


def test_panel_sql_reads_only_the_wall_schema_and_has_no_comments() -> None:
    """Besides the role (pantau_wall can read nothing else), what each query names: wall.*
    relations and functions, and set-returning functions over their values. No SQL comments:
    Grafana 12.4+ strips them before expanding macros, older versions do not."""
    allowed_functions = {"jsonb_array_elements", "unnest"}
    for q in POSTGRES_QUERIES:
        assert "--" not in q.text, _id(q)
        assert "/*" not in q.text, _id(q)
        for m in re.finditer(r"\b(?:FROM|JOIN)\s+([A-Za-z_][\w.]*)(\s*\()?", q.text):
            name, call = m[1], m[2]
            if call and name in allowed_functions:
                continue
            assert name.startswith("wall."), (_id(q), name)
