"""Device registry, MQTT credentials, liveness and outages, alerts, availability reports."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse

if TYPE_CHECKING:  # pantau.settings composes devices.outages.settings: no import cycle
    from pantau.context import ServiceContext
    from pantau.supervisor import Worker


def workers(ctx: ServiceContext) -> list[Worker]:
    from devices import outages

    return outages.workers(ctx)


def setup_app(app: FastAPI, ctx: ServiceContext) -> None:
    from devices import outages
    from devices.api import registry_error_response, router
    from devices.credentials import issuer_for
    from devices.dynsec import DynsecError
    from devices.registry import RegistryError
    from pantau.openapi import error_response

    app.state.credentials = issuer_for(ctx.settings.mqtt)
    app.include_router(router)
    app.include_router(phone_page())
    outages.setup_app(app, ctx)

    @app.exception_handler(RegistryError)
    async def _registry_error(request: Request, exc: RegistryError) -> JSONResponse:
        return registry_error_response(exc)

    @app.exception_handler(DynsecError)
    async def _broker_error(request: Request, exc: DynsecError) -> JSONResponse:
        return error_response(503, f"nothing was changed: {exc}")


def phone_page() -> APIRouter:
    """The field technician's page: one file, no CDN, read once."""
    from importlib import resources

    page = resources.files("devices").joinpath("web/index.html").read_bytes()
    router = APIRouter(tags=["phone page"])

    @router.get("/m", include_in_schema=False)
    @router.get(
        "/m/",
        summary="The phone page for registering devices (HTML)",
        response_class=HTMLResponse,
    )
    async def phone() -> Response:
        return Response(
            page, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"}
        )

    return router


def register_cli(app: typer.Typer) -> None:
    from devices import outages
    from devices.cli import app as devices_app

    app.add_typer(devices_app, name="devices")
    outages.register_cli(app)
