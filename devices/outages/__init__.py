"""Liveness and outage detection, value alarms, alert delivery, availability reports: the
operator half of the registry (issue 9). The detector is the only writer of liveness states
and outages; what other domains tell it goes through `pantau_report_status` in the database."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer
    from fastapi import FastAPI

    from pantau.context import ServiceContext
    from pantau.supervisor import Worker


def workers(ctx: ServiceContext) -> list[Worker]:
    from devices.outages.delivery import DeliveryMetrics, run_delivery
    from devices.outages.detector import DetectorMetrics, run_detector
    from pantau import db
    from pantau.supervisor import Worker

    metrics = DetectorMetrics(ctx.registry)
    settings = ctx.settings

    async def run(stop: asyncio.Event) -> None:
        await run_detector(
            lambda: db.connect(settings.database, autocommit=True), settings.outages, metrics, stop
        )

    delivery_metrics = DeliveryMetrics(ctx.registry, settings.outages.receivers())

    async def deliver(stop: asyncio.Event) -> None:
        await run_delivery(
            lambda: db.connect(settings.database, autocommit=True),
            settings.outages,
            delivery_metrics,
            stop,
        )

    return [Worker("outage-detector", run), Worker("alert-delivery", deliver)]


def setup_app(app: FastAPI, ctx: ServiceContext) -> None:
    from devices.outages.api import router
    from devices.outages.report_api import router as report_router

    app.include_router(router)
    app.include_router(report_router)


def register_cli(app: typer.Typer) -> None:
    from devices.outages.cli import register
    from devices.outages.report_cli import app as report_app

    app.add_typer(report_app, name="report")
    register(app)
