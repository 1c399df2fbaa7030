"""Pipeline: is the ingestion healthy? Prometheus' view of Pantau (its own /metrics: ingest rate,
lag, spool, quarantine, connections, camera probe load, alert delivery) and, beside it, what the
database says (wall.pipeline). Metric names are those Pantau exports; a test holds them to its
registry and promtool parses every expression."""

from __future__ import annotations

from grafana_foundation_sdk.builders import stat
from grafana_foundation_sdk.models import dashboard as dm

from grafana import panels, style
from grafana.dashboards import board
from grafana.panels import Count, promql, sql

UID = "pantau-pipeline"
JOB = 'job="pantau"'

DATABASE_SQL = """
SELECT readings_5m, devices_reporting_5m, quarantined_2h, alerts_pending, cameras
FROM wall.pipeline
"""
RUNNING = {"1": ("Berjalan", style.GREEN), "0": ("Mati", style.RED)}
LEADER = {"1": ("Aktif", style.GREEN), "0": ("Tidak ada", style.RED)}
SPOOL = {"0": ("Normal", style.GREEN), "1": ("Penuh", style.RED)}


def _up(title: str, expr: str, words: dict[str, tuple[str, str]]) -> stat.Panel:
    return panels.big_value(
        title, promql(expr, title, instant=True), "prometheus", w=4, h=4, words=words
    )


def build() -> dm.Dashboard:
    rate = "[$__rate_interval]"
    return (
        board(
            UID,
            "Pipeline",
            "Kesehatan jalur data Pantau: ingest, spool, karantina, koneksi, probe kamera.",
            time_from="now-3h",
            refresh="30s",
            tags=("dinding", "pipeline"),
        )
        .with_panel(_up("Pantau", f"min(up{{{JOB}}})", RUNNING))
        .with_panel(_up("Basis data", f"min(pantau_database_up{{{JOB}}})", style.UP_DOWN))
        .with_panel(_up("Broker MQTT", f"min(pantau_mqtt_connected{{{JOB}}})", style.UP_DOWN))
        .with_panel(
            _up("Penulis ingest", f"min(pantau_ingest_database_connected{{{JOB}}})", style.UP_DOWN)
        )
        .with_panel(
            _up("Detektor gangguan", f"max(pantau_outage_detector_leader{{{JOB}}})", LEADER)
        )
        .with_panel(_up("Spool", f"max(pantau_ingest_spool_full{{{JOB}}})", SPOOL))
        .with_panel(
            panels.counts(
                "Menurut basis data",
                sql(DATABASE_SQL),
                [
                    Count("readings_5m", "Pembacaan 5 menit", style.BLUE),
                    Count("devices_reporting_5m", "Perangkat melapor 5 menit", style.GREEN),
                    Count("quarantined_2h", "Karantina 2 jam", style.AMBER),
                    Count("alerts_pending", "Notifikasi tertunda", style.RED),
                    Count("cameras", "Kamera aktif", "#37474f"),
                ],
                w=24,
                h=4,
            )
        )
        .with_panel(
            panels.series(
                "Laju ingest (per detik)",
                [
                    promql(
                        f"sum(rate(pantau_mqtt_messages_received_total{{{JOB}}}{rate}))",
                        "pesan diterima",
                        "A",
                    ),
                    promql(
                        f"sum(rate(pantau_ingest_readings_written_total{{{JOB}}}{rate}))",
                        "pembacaan tersimpan",
                        "B",
                    ),
                ],
                "prometheus",
                w=12,
                h=6,
                unit="short",
                min_value=0,
            )
        )
        .with_panel(
            panels.series(
                "Lag ingest (waktu simpan - waktu baca)",
                [
                    promql(
                        "histogram_quantile(0.95, sum by (le) "
                        f"(rate(pantau_ingest_lag_seconds_bucket{{{JOB}}}{rate})))",
                        "p95",
                        "A",
                    ),
                    promql(
                        "histogram_quantile(0.5, sum by (le) "
                        f"(rate(pantau_ingest_lag_seconds_bucket{{{JOB}}}{rate})))",
                        "median",
                        "B",
                    ),
                ],
                "prometheus",
                w=12,
                h=6,
                unit="s",
                min_value=0,
            )
        )
        .with_panel(
            panels.timeline(
                "Koneksi",
                [
                    promql(f"min(up{{{JOB}}})", "Pantau (scrape)", "A"),
                    promql(f"min(pantau_database_up{{{JOB}}})", "Basis data", "B"),
                    promql(f"min(pantau_mqtt_connected{{{JOB}}})", "Broker MQTT", "C"),
                    promql(
                        f"min(pantau_ingest_database_connected{{{JOB}}})", "Penulis ingest", "D"
                    ),
                ],
                style.UP_DOWN,
                w=12,
                h=6,
            )
        )
        .with_panel(
            panels.series(
                "Spool",
                [
                    promql(f"sum(pantau_ingest_spool_bytes{{{JOB}}})", "isi spool", "A"),
                ],
                "prometheus",
                w=6,
                h=6,
                unit="bytes",
                min_value=0,
                description="Pembacaan yang menunggu basis data di disk lokal.",
            )
        )
        .with_panel(
            panels.series(
                "Karantina (pesan/menit)",
                [
                    promql(
                        "sum by (reason) "
                        f"(rate(pantau_ingest_messages_quarantined_total{{{JOB}}}{rate})) * 60",
                        "{{reason}}",
                        "A",
                    ),
                ],
                "prometheus",
                w=6,
                h=6,
                unit="short",
                min_value=0,
            )
        )
        .with_panel(
            panels.series(
                "Beban probe kamera",
                [
                    promql(f"sum(pantau_camera_probes{{{JOB}}})", "probe berjalan", "A"),
                    promql(f"sum(pantau_camera_unprobed{{{JOB}}})", "kamera tanpa probe", "B"),
                    promql(f"sum(pantau_camera_reports_pending{{{JOB}}})", "laporan menunggu", "C"),
                    promql(
                        f"sum(rate(pantau_camera_keyframes_decoded_total{{{JOB}}}{rate}))",
                        "keyframe didekode per detik",
                        "D",
                    ),
                ],
                "prometheus",
                w=12,
                h=6,
                unit="short",
                min_value=0,
            )
        )
        .with_panel(
            panels.series(
                "Notifikasi gangguan",
                [
                    promql(f"max(pantau_alert_outbox_pending{{{JOB}}})", "tertunda di outbox", "A"),
                    promql(
                        "sum by (result) "
                        f"(rate(pantau_alert_deliveries_total{{{JOB}}}{rate})) * 60",
                        "terkirim per menit: {{result}}",
                        "B",
                    ),
                ],
                "prometheus",
                w=12,
                h=6,
                unit="short",
                min_value=0,
            )
        )
        .build()
    )
