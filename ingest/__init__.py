"""Ingestion: MQTT subscription, decoding, batching and writing readings."""

from __future__ import annotations

import typer
from fastapi import APIRouter

from ingest.service import IngestService
from pantau.context import ServiceContext
from pantau.supervisor import Worker


def workers(ctx: ServiceContext) -> list[Worker]:
    return [IngestService(ctx).worker()]


def routers() -> list[APIRouter]:
    return []


def register_cli(app: typer.Typer) -> None:
    from ingest.cli import register

    register(app)
