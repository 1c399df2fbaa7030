"""Kecamatan: one kecamatan at a time (variable `kecamatan`), its device types to show (`tipe`,
several or all): counts, its devices and their state, its map, latest values, its river gauges
against their own Siaga levels, and what is wrong there now."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dm

from grafana import datasources, panels, style
from grafana.dashboards import board
from grafana.panels import Column, sql

UID = "pantau-kecamatan"

KECAMATAN_SQL = """
SELECT kecamatan AS __value, kecamatan_name AS __text
FROM wall.status_by_kecamatan
ORDER BY kecamatan_name
"""
TIPE_SQL = """
SELECT device_type AS __value, type_name AS __text
FROM wall.status_by_kecamatan_type
WHERE kecamatan = ${kecamatan:sqlstring}
ORDER BY type_name
"""
# `tipe` may be empty (a kecamatan without devices): ARRAY[]::text[] stays valid SQL.
IN_PLACE = (
    "kecamatan = ${kecamatan:sqlstring} AND device_type = ANY (ARRAY[${tipe:sqlstring}]::text[])"
)
STATE_SQL = """
SELECT state
FROM wall.status_by_kecamatan
WHERE kecamatan = ${kecamatan:sqlstring}
"""
COUNTS_SQL = f"""
SELECT coalesce(sum(total), 0) AS total, coalesce(sum(up), 0) AS up,
       coalesce(sum(late), 0) AS late, coalesce(sum(down), 0) AS down,
       coalesce(sum(paused), 0) AS paused, coalesce(sum(unknown), 0) AS unknown
FROM wall.status_by_kecamatan_type
WHERE {IN_PLACE}
"""
DEVICES_SQL = f"""
SELECT name, type_name, state, cause_label, since, last_seen
FROM wall.device_state
WHERE {IN_PLACE}
ORDER BY array_position(ARRAY['down', 'late', 'unknown', 'paused', 'up'], state), name
"""
MAP_SQL = f"""
SELECT latitude, longitude, name, type_name, state, cause_label
FROM wall.device_state
WHERE {IN_PLACE} AND latitude IS NOT NULL AND longitude IS NOT NULL
ORDER BY array_position(ARRAY['up', 'unknown', 'paused', 'late', 'down'], state), name
"""
VALUES_SQL = f"""
SELECT name, metric_label, value, unit, time, level, severity
FROM wall.latest_values
WHERE {IN_PLACE} AND value IS NOT NULL
ORDER BY name, metric_label
"""
GAUGES_SQL = """
SELECT name, level_cm, coalesce(level, 'Normal') AS level, severity, time,
       (SELECT string_agg((l ->> 'name') || ': ' || (l ->> 'raise_at') || ' cm', ', ')
        FROM jsonb_array_elements(levels) AS l) AS siaga
FROM wall.flood_levels
WHERE kecamatan = ${kecamatan:sqlstring}
ORDER BY level_cm DESC NULLS LAST, name
"""
FLOOD_SQL = """
SELECT bucket AS "time", name AS metric, avg AS value
FROM wall.series_1m
WHERE metric = 'water_level_cm' AND kecamatan = ${kecamatan:sqlstring}
  AND $__timeFilter(bucket)
  AND $__timeTo()::timestamptz - $__timeFrom()::timestamptz <= interval '2 days'
UNION ALL
SELECT bucket, name, avg
FROM wall.series_1h
WHERE metric = 'water_level_cm' AND kecamatan = ${kecamatan:sqlstring}
  AND $__timeFilter(bucket)
  AND $__timeTo()::timestamptz - $__timeFrom()::timestamptz > interval '2 days'
ORDER BY 1
"""
TROUBLE_SQL = """
SELECT kind, coalesce(device_name, area_down || ' dari ' || area_total || ' perangkat mati')
           AS what,
       cause_label AS reason, severity, since, duration_seconds
FROM wall.current_outages
WHERE kecamatan = ${kecamatan:sqlstring}
UNION ALL
SELECT 'alarm', device_name,
       level || ' (' || metric_label || ' ' || round(value::numeric, 1) || ' '
           || coalesce(unit, '') || ')',
       severity, since, duration_seconds
FROM wall.active_alarms
WHERE kecamatan = ${kecamatan:sqlstring}
ORDER BY since
"""

WORDS_LEVEL = {
    "Normal": ("Normal", style.GREEN),
    "Siaga 3": ("Siaga 3", style.YELLOW),
    "Siaga 2": ("Siaga 2", style.AMBER),
    "Siaga 1": ("Siaga 1", style.RED),
}


def build() -> dm.Dashboard:
    postgres_ref = datasources.ref("postgres")
    kecamatan = (
        db.QueryVariable("kecamatan")
        .label("Kecamatan")
        .datasource(postgres_ref)
        .query(KECAMATAN_SQL.strip())
        .refresh(dm.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(dm.VariableSort.DISABLED)
        .multi(False)
        .include_all(False)
    )
    tipe = (
        db.QueryVariable("tipe")
        .label("Tipe perangkat")
        .datasource(postgres_ref)
        .query(TIPE_SQL.strip())
        .refresh(dm.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(dm.VariableSort.DISABLED)
        .multi(True)
        .include_all(True)
        .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )
    return (
        board(
            UID,
            "Kecamatan",
            "Satu kecamatan: perangkatnya, statusnya, nilai terakhir dan gangguannya.",
            time_from="now-24h",
            refresh="1m",
            tags=("kecamatan",),
        )
        .with_variable(kecamatan)
        .with_variable(tipe)
        .with_panel(
            panels.big_value(
                "Status wilayah ${kecamatan:text}",
                sql(STATE_SQL),
                "postgres",
                w=6,
                h=5,
                words=style.STATES,
                text_fields=True,
                description="Warna petak kecamatan di dinding.",
            )
        )
        .with_panel(
            panels.counts(
                "Perangkat ${kecamatan:text}",
                sql(COUNTS_SQL),
                panels.state_counts("Jumlah"),
                w=18,
                h=5,
            )
        )
        .with_panel(
            panels.grid(
                "Perangkat",
                sql(DEVICES_SQL),
                [
                    Column("name", "Perangkat"),
                    Column("type_name", "Tipe"),
                    Column("state", "Status", words=style.STATES, width=150),
                    Column("cause_label", "Sebab"),
                    Column("since", "Sejak (WIB)", unit="dateTimeAsLocalNoDateIfToday"),
                    Column("last_seen", "Data terakhir (WIB)", unit="dateTimeAsLocalNoDateIfToday"),
                ],
                w=15,
                h=10,
            )
        )
        .with_panel(panels.device_map("Peta", sql(MAP_SQL), w=9, h=10))
        .with_panel(
            panels.grid(
                "Gangguan dan alarm saat ini",
                sql(TROUBLE_SQL),
                [
                    Column("kind", "Jenis", words=style.KINDS, width=120),
                    Column("what", "Perangkat"),
                    Column("reason", "Sebab"),
                    Column("severity", "Tingkat", words=style.SEVERITIES, width=120),
                    Column("since", "Sejak (WIB)", unit="dateTimeAsLocalNoDateIfToday"),
                    Column("duration_seconds", "Lama", unit="dtdhms", width=120),
                ],
                w=12,
                h=8,
            )
        )
        .with_panel(
            panels.grid(
                "Pos pantau air",
                sql(GAUGES_SQL),
                [
                    Column("name", "Pos"),
                    Column("level_cm", "Tinggi", unit="lengthcm"),
                    Column("level", "Status", words=WORDS_LEVEL, width=110),
                    Column("severity", "Tingkat", words=style.SEVERITIES, width=110),
                    Column("time", "Waktu (WIB)", unit="dateTimeAsLocalNoDateIfToday"),
                    Column("siaga", "Batas siaga pos ini"),
                ],
                w=12,
                h=8,
                description="Status menurut batas siaga masing-masing pos.",
            )
        )
        .with_panel(
            panels.series(
                "Tinggi muka air (cm)",
                [sql(FLOOD_SQL, "time_series")],
                "postgres",
                w=12,
                h=9,
                unit="lengthcm",
                steps=style.SIAGA,
                decimals=0,
                description="Garis putus-putus: batas siaga bawaan tipe (350, 450, 550 cm).",
            )
        )
        .with_panel(
            panels.grid(
                "Nilai terakhir",
                sql(VALUES_SQL),
                [
                    Column("name", "Perangkat"),
                    Column("metric_label", "Besaran"),
                    Column("value", "Nilai"),
                    Column("unit", "Satuan", width=90),
                    Column("time", "Waktu (WIB)", unit="dateTimeAsLocalNoDateIfToday"),
                    Column("level", "Level alarm"),
                    Column("severity", "Tingkat", words=style.SEVERITIES, width=110),
                ],
                w=12,
                h=9,
                cell_height=common.TableCellHeight.SM,
            )
        )
        .build()
    )
