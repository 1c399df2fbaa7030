"""Grafana dashboards, data sources, playlists and alert rules as code."""

from __future__ import annotations

import typer
from fastapi import FastAPI

from pantau.context import ServiceContext
from pantau.supervisor import Worker


def workers(ctx: ServiceContext) -> list[Worker]:
    return []


def setup_app(app: FastAPI, ctx: ServiceContext) -> None:
    return None


def register_cli(app: typer.Typer) -> None:
    return None
