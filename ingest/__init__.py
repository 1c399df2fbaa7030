"""Ingestion: MQTT subscription, decoding, batching and writing readings."""

from __future__ import annotations

import typer
from fastapi import FastAPI

from ingest.service import IngestService
from pantau.context import ServiceContext
from pantau.supervisor import Worker


def workers(ctx: ServiceContext) -> list[Worker]:
    return IngestService(ctx).workers()


def setup_app(app: FastAPI, ctx: ServiceContext) -> None:
    return None


def register_cli(app: typer.Typer) -> None:
    from ingest.cli import quarantine_app, register
    from ingest.deadletters_cli import dead_letters

    register(app)
    quarantine_app.command("dead-letters")(dead_letters)
