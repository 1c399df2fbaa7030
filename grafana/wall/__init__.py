"""Pantau's own command-center wall at /wall: one page for a 1920x1080 screen, fed by the same
`wall.*` views as Grafana's dashboards (see README, "/wall"), and the cameras' snapshots at
capability URLs for the page and for Grafana."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from pantau.context import ServiceContext


def setup_app(app: FastAPI, ctx: ServiceContext) -> None:
    from grafana.wall.api import page_router, snapshot_router
    from streams.snapshots import SnapshotStore

    # Reading only, as the cameras API does: the probes' worker keeps its own store for writing.
    snapshots = SnapshotStore(ctx.settings.streams.snapshot_dir, ctx.settings.streams)
    app.include_router(snapshot_router(snapshots))
    if ctx.settings.grafana.wall_enabled:
        app.include_router(page_router(ctx.settings.grafana, ctx.registry))
