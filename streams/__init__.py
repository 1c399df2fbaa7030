"""RTSP camera probes, health classification and snapshots."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pantau.settings composes streams.settings: no import cycle
    import typer
    from fastapi import FastAPI

    from pantau.context import ServiceContext
    from pantau.supervisor import Worker


def workers(ctx: ServiceContext) -> list[Worker]:
    return []


def setup_app(app: FastAPI, ctx: ServiceContext) -> None:
    from streams.api import router
    from streams.snapshots import SnapshotStore

    # Reading only: the probes' worker keeps its own store (and its metrics) for writing.
    app.state.snapshots = SnapshotStore(ctx.settings.streams.snapshot_dir, ctx.settings.streams)
    app.include_router(router)


def register_cli(app: typer.Typer) -> None:
    from streams.cli import app as cameras_app

    app.add_typer(cameras_app, name="cameras")
