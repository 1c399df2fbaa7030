"""Grafana dashboards, data sources, playlists and alert rules as code, and the built-in /wall."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pantau.settings composes grafana.settings: no import cycle
    import typer
    from fastapi import FastAPI

    from pantau.context import ServiceContext
    from pantau.supervisor import Worker


def workers(ctx: ServiceContext) -> list[Worker]:
    return []


def setup_app(app: FastAPI, ctx: ServiceContext) -> None:
    """/wall and its data (`grafana.wall_enabled`), and the cameras' snapshot capability URLs."""
    from grafana import wall

    wall.setup_app(app, ctx)


def register_cli(app: typer.Typer) -> None:
    from grafana.cli import app as grafana_app
    from grafana.wall.cli import app as wall_app

    app.add_typer(grafana_app, name="grafana")
    app.add_typer(wall_app, name="wall")
