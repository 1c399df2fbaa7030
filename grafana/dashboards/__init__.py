"""The five dashboards, built with grafana-foundation-sdk: stable uids (a re-publish updates in
place), titles and labels in Bahasa Indonesia, times in WIB. `build_all()` is what `export` and
`publish` write and what the tests run."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as dm

from grafana import postgres

TIMEZONE = "Asia/Jakarta"
TAG = "pantau"
DEFAULT_PANTAU_URL = "http://127.0.0.1:8080"
UIDS = ("pantau-dinding", "pantau-kecamatan", "pantau-kamera", "pantau-evaluasi", "pantau-pipeline")
# The dashboards a wall rotates through (the kiosk playlist); the others are looked at on demand.
WALL = ("pantau-dinding", "pantau-kamera", "pantau-pipeline")


def board(
    uid: str,
    title: str,
    description: str,
    *,
    time_from: str,
    refresh: str | None,
    tags: tuple[str, ...] = (),
) -> db.Dashboard:
    """A dashboard with what all of Pantau's share: WIB, read-only, links to the others."""
    dashboard = (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG, *tags])
        .timezone(TIMEZONE)
        .week_start("monday")
        .time(time_from, "now")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .readonly()
        .timepicker(db.TimePicker().refresh_intervals(["30s", "1m", "5m", "15m", "1h"]))
        .link(
            db.DashboardLink("Dasbor Pantau")
            .type(dm.DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(False)
            .include_vars(False)
            .keep_time(False)
            .target_blank(False)
            .icon("external link")
            .tooltip("")
            .url("")
        )
    )
    dashboard.refresh(refresh if refresh is not None else False)
    return dashboard


def build_all(pantau_url: str = DEFAULT_PANTAU_URL) -> list[dm.Dashboard]:
    """The five dashboards; `pantau_url` is where a wall PC's browser reaches Pantau (the Kamera
    dashboard's snapshots), `http.public_url` at export."""
    from grafana.dashboards import dinding, evaluasi, kamera, kecamatan, pipeline

    postgres.register()
    boards = [
        dinding.build(),
        kecamatan.build(),
        kamera.build(pantau_url),
        evaluasi.build(),
        pipeline.build(),
    ]
    for built in boards:
        _number_panels(built)
    return boards


def _number_panels(dashboard: dm.Dashboard) -> None:
    """Panel ids 1, 2, ... in order: stable across builds, so exports are byte-identical."""
    number = 0
    for item in dashboard.panels or []:
        number += 1
        item.id_val = number
        if isinstance(item, dm.RowPanel):
            for panel in item.panels:
                number += 1
                panel.id_val = number
