"""RTSP camera probes, health classification and snapshots."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pantau.settings composes streams.settings: no import cycle
    import typer
    from fastapi import FastAPI

    from pantau.context import ServiceContext
    from pantau.supervisor import Worker
    from streams.service import SnapshotSaver


def workers(ctx: ServiceContext) -> list[Worker]:
    """The worker "camera-probes": a probe thread per camera this instance holds a lease on
    (streams/leases.py), their reports judged and stored."""
    if not ctx.settings.streams.enabled:
        return []
    import asyncio

    from pantau import db
    from pantau.supervisor import Worker
    from streams.health import Judge
    from streams.probe import ProbeMetrics, run_camera
    from streams.service import CameraProbes, ServiceMetrics

    settings = ctx.settings
    metrics = ServiceMetrics(ctx.registry)
    probe_metrics = ProbeMetrics(ctx.registry)
    snapshots = _snapshot_store(ctx)

    async def run(stop: asyncio.Event) -> None:
        probes = CameraProbes(
            settings.streams,
            lambda: db.connect(settings.database, autocommit=True),
            run_camera=run_camera,
            judge=Judge,
            metrics=metrics,
            probe_metrics=probe_metrics,
            snapshots=snapshots,
            shutdown_seconds=settings.service.shutdown_timeout_seconds,
            holder=settings.mqtt.client_id,  # unique and stable per instance: its leases
        )
        await probes.run(stop)

    return [Worker("camera-probes", run, needs_database=True)]


def _snapshot_store(ctx: ServiceContext) -> SnapshotSaver:
    from streams.snapshots import SnapshotMetrics, SnapshotStore

    streams = ctx.settings.streams
    return SnapshotStore(streams.snapshot_dir, streams, SnapshotMetrics(ctx.registry))


def setup_app(app: FastAPI, ctx: ServiceContext) -> None:
    from streams.api import router
    from streams.snapshots import SnapshotStore

    # Reading only: the probes' worker keeps its own store (and its metrics) for writing.
    app.state.snapshots = SnapshotStore(ctx.settings.streams.snapshot_dir, ctx.settings.streams)
    app.include_router(router)


def register_cli(app: typer.Typer) -> None:
    from streams.cli import app as cameras_app

    app.add_typer(cameras_app, name="cameras")
