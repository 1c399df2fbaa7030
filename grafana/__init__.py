"""Grafana dashboards, data sources, playlists and alert rules as code."""

from __future__ import annotations

import typer
from fastapi import APIRouter

from pantau.context import ServiceContext
from pantau.supervisor import Worker


def workers(ctx: ServiceContext) -> list[Worker]:
    return []


def routers() -> list[APIRouter]:
    return []


def register_cli(app: typer.Typer) -> None:
    return None
