"""Evaluasi: availability over the period chosen in the time picker (a month by default), for
the whole programme, per pillar, per kecamatan and per device type, from
wall.availability(from, to, by): the evaluation and monitoring the regent asked for."""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as dm

from grafana import panels, style
from grafana.dashboards import board
from grafana.panels import Column, sql

UID = "pantau-evaluasi"


def availability_sql(by: str, columns: str, order: str) -> str:
    return f"""
SELECT {columns}
FROM wall.availability($__timeFrom(), $__timeTo(), '{by}')
ORDER BY {order}
"""


ALL_SQL = availability_sql("all", "availability", "1")
PILLAR_SQL = availability_sql("pillar", "label, availability", "label")
KECAMATAN_SQL = availability_sql(
    "kecamatan", "label, devices, availability, down_seconds", "availability NULLS LAST, label"
)
TYPE_SQL = availability_sql(
    "type", "label, devices, availability, down_seconds", "availability NULLS LAST, label"
)

GROUP_COLUMNS = (
    Column("devices", "Perangkat", width=110),
    Column("availability", "Ketersediaan", unit="percentunit", steps=style.AVAILABILITY,
           gauge=True),
    Column("down_seconds", "Lama mati", unit="dtdhms", width=140),
)  # fmt: skip


def build() -> dm.Dashboard:
    return (
        board(
            UID,
            "Evaluasi",
            "Ketersediaan perangkat kota cerdas per pilar, kecamatan dan tipe pada periode "
            "yang dipilih (pemeliharaan terencana tidak dihitung).",
            time_from="now-30d",
            refresh=None,
            tags=("evaluasi",),
        )
        .with_panel(
            panels.big_value(
                "Ketersediaan keseluruhan",
                sql(ALL_SQL),
                "postgres",
                w=6,
                h=8,
                unit="percentunit",
                steps=style.AVAILABILITY,
                decimals=2,
                description="Bagian waktu perangkat hidup selama periode yang dipilih.",
            )
        )
        .with_panel(
            panels.bars(
                "Per pilar",
                sql(PILLAR_SQL),
                "label",
                w=18,
                h=8,
                unit="percentunit",
                steps=style.AVAILABILITY,
                max_value=1,
                decimals=2,
                description="Enam pilar kota cerdas.",
            )
        )
        .with_panel(
            panels.grid(
                "Per kecamatan",
                sql(KECAMATAN_SQL),
                [Column("label", "Kecamatan"), *GROUP_COLUMNS],
                w=12,
                h=18,
                description="Yang terendah lebih dulu.",
            )
        )
        .with_panel(
            panels.grid(
                "Per tipe perangkat",
                sql(TYPE_SQL),
                [Column("label", "Tipe perangkat"), *GROUP_COLUMNS],
                w=12,
                h=18,
                description="Yang terendah lebih dulu.",
            )
        )
        .build()
    )
