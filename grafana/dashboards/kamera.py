"""Kamera: every CCTV camera's latest snapshot with its state and age. The picture comes from
Pantau's capability URL (/wall/cameras/{id}/snapshot.jpg?key=..., wall.camera_tiles), prefixed
with the constant variable `pantau_url` (http.public_url at export): no API token is in the
dashboard, and the wall PC's browser fetches the picture from Pantau itself."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dm

from grafana import panels, style
from grafana.dashboards import board
from grafana.panels import Column, sql

UID = "pantau-kamera"

COUNTS_SQL = """
SELECT total, up, late, down, paused, unknown
FROM wall.status_by_type
WHERE device_type = 'camera'
"""
TILES_SQL = """
SELECT ${pantau_url:sqlstring} || snapshot_path AS snapshot, name, kecamatan_name, state,
       picture, cause_label, snapshot_age_seconds, fps, checked_at
FROM wall.camera_tiles
ORDER BY array_position(ARRAY['down', 'late', 'unknown', 'paused', 'up'], state),
         kecamatan_name, name
"""


def build(pantau_url: str) -> dm.Dashboard:
    return (
        board(
            UID,
            "Kamera",
            "Gambar terakhir setiap kamera CCTV, statusnya dan umurnya.",
            time_from="now-1h",
            refresh="1m",
            tags=("dinding", "kamera"),
        )
        .with_variable(
            db.ConstantVariable("pantau_url")
            .label("Alamat Pantau")
            .description("Alamat Pantau yang dijangkau peramban layar dinding (http.public_url).")
            .value(pantau_url.rstrip("/"))
        )
        .with_panel(
            panels.counts(
                "Status kamera",
                sql(COUNTS_SQL),
                panels.state_counts("Jumlah kamera"),
                w=24,
                h=4,
            )
        )
        .with_panel(
            panels.grid(
                "Kamera CCTV",
                sql(TILES_SQL),
                [
                    Column("snapshot", "Gambar terakhir", image=True, width=220),
                    Column("name", "Kamera"),
                    Column("kecamatan_name", "Kecamatan", width=170),
                    Column("state", "Status", words=style.STATES, width=150),
                    Column("picture", "Gambar", words=style.PICTURES, width=110),
                    Column("cause_label", "Sebab"),
                    Column(
                        "snapshot_age_seconds",
                        "Umur gambar",
                        unit="s",
                        steps=style.SNAPSHOT_AGE,
                        width=140,
                    ),
                    Column("fps", "fps", unit="none", width=80),
                    Column("checked_at", "Diperiksa (WIB)", unit="dateTimeAsLocalNoDateIfToday"),
                ],
                w=24,
                h=23,
                cell_height=common.TableCellHeight.LG,
                description="Yang mati lebih dulu. Gambar dari Pantau lewat alamat berkunci "
                "per kamera.",
            )
        )
        .build()
    )
