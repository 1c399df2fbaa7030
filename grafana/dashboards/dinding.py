"""Dinding Komando: the command center's main wall. Status counts, a map of the devices by state,
the current outages (area outages first), flood levels against the Siaga levels, rain, PM2.5 in
ISPU's categories and traffic. Fits one 1080p screen (27 grid rows)."""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as dm

from grafana import panels, style
from grafana.dashboards import board
from grafana.panels import Column, Count, sql

UID = "pantau-dinding"

STATUS_SQL = """
SELECT total, up, late, down, paused, unknown, area_outages, alarms
FROM wall.status_totals
"""
MAP_SQL = """
SELECT latitude, longitude, name, type_name, kecamatan_name, state, cause_label, since
FROM wall.device_state
WHERE latitude IS NOT NULL AND longitude IS NOT NULL
ORDER BY array_position(ARRAY['up', 'unknown', 'paused', 'late', 'down'], state), name
"""
OUTAGES_SQL = """
SELECT kind, kecamatan_name,
       coalesce(device_name, area_down || ' dari ' || area_total || ' perangkat mati') AS what,
       type_name, cause_label, severity, since, duration_seconds
FROM wall.current_outages
WHERE parent_id IS NULL
ORDER BY sort
LIMIT 30
"""
# 1-minute rollups up to two days, hourly ones beyond (a wall zoomed out to a week).
FLOOD_SQL = """
SELECT bucket AS "time", name AS metric, avg AS value
FROM wall.series_1m
WHERE metric = 'water_level_cm' AND $__timeFilter(bucket)
  AND $__timeTo()::timestamptz - $__timeFrom()::timestamptz <= interval '2 days'
UNION ALL
SELECT bucket, name, avg
FROM wall.series_1h
WHERE metric = 'water_level_cm' AND $__timeFilter(bucket)
  AND $__timeTo()::timestamptz - $__timeFrom()::timestamptz > interval '2 days'
ORDER BY 1
"""
RAIN_SQL = """
SELECT name, mm_1h
FROM wall.rainfall
ORDER BY mm_1h DESC, name
LIMIT 12
"""
AIR_SQL = """
SELECT name, pm25
FROM wall.air_quality
WHERE pm25 IS NOT NULL
ORDER BY pm25 DESC, name
LIMIT 12
"""
TRAFFIC_SQL = """
SELECT name, vehicles_1h
FROM wall.traffic
ORDER BY vehicles_1h DESC, name
LIMIT 12
"""

STATUS_COUNTS = (
    *panels.state_counts("Jumlah perangkat"),
    Count("area_outages", "Gangguan wilayah", style.DARK_RED),
    Count("alarms", "Alarm aktif", style.AMBER),
)


def build() -> dm.Dashboard:
    return (
        board(
            UID,
            "Dinding Komando",
            "Ringkasan kota cerdas Kabupaten Bekasi untuk layar dinding Command Center.",
            time_from="now-6h",
            refresh="30s",
            tags=("dinding",),
        )
        .with_panel(
            panels.counts(
                "Status perangkat",
                sql(STATUS_SQL),
                STATUS_COUNTS,
                w=24,
                h=5,
                description="Jumlah perangkat per status saat ini, gangguan wilayah dan alarm.",
            )
        )
        .with_panel(
            panels.device_map(
                "Peta perangkat",
                sql(MAP_SQL),
                w=9,
                h=12,
                description="Setiap titik satu perangkat, warnanya statusnya.",
            )
        )
        .with_panel(
            panels.grid(
                "Gangguan saat ini",
                sql(OUTAGES_SQL),
                [
                    Column("kind", "Jenis", words=style.KINDS, width=120),
                    Column("kecamatan_name", "Kecamatan", width=170),
                    Column("what", "Perangkat"),
                    Column("type_name", "Tipe", width=190),
                    Column("cause_label", "Sebab"),
                    Column("severity", "Tingkat", words=style.SEVERITIES, width=120),
                    Column("since", "Sejak (WIB)", unit="dateTimeAsLocalNoDateIfToday", width=150),
                    Column("duration_seconds", "Lama", unit="dtdhms", width=120),
                ],
                w=15,
                h=12,
                description="Gangguan wilayah lebih dulu, lalu yang paling parah dan paling lama.",
            )
        )
        .with_panel(
            panels.series(
                "Tinggi muka air (cm)",
                [sql(FLOOD_SQL, "time_series")],
                "postgres",
                w=9,
                h=10,
                unit="lengthcm",
                steps=style.SIAGA,
                decimals=0,
                description="Garis putus-putus: Siaga 3 (350 cm), Siaga 2 (450), Siaga 1 (550).",
            )
        )
        .with_panel(
            panels.bars(
                "Curah hujan 1 jam (mm)",
                sql(RAIN_SQL),
                "name",
                w=5,
                h=10,
                unit="lengthmm",
                steps=style.BMKG_HOUR,
                decimals=1,
                description="Kelas BMKG: ringan 1-5, sedang 5-10, lebat 10-20, sangat lebat >20.",
            )
        )
        .with_panel(
            panels.bars(
                "PM2.5 (µg/m³)",
                sql(AIR_SQL),
                "name",
                w=5,
                h=10,
                unit="conµgm3",
                steps=style.ISPU_PM25,
                max_value=300,
                decimals=0,
                description="Kategori ISPU: Baik, Sedang, Tidak Sehat, Sangat Tidak Sehat, "
                "Berbahaya.",
            )
        )
        .with_panel(
            panels.bars(
                "Lalu lintas (kendaraan/jam)",
                sql(TRAFFIC_SQL),
                "name",
                w=5,
                h=10,
                unit="short",
                steps=((None, style.BLUE, "kendaraan"),),
                decimals=0,
                description="Kendaraan terhitung selama satu jam terakhir.",
            )
        )
        .build()
    )
