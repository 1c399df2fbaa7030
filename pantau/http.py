"""The one HTTP port: health, readiness, Prometheus metrics, OpenAPI docs and each domain's
routes; served by uvicorn inside the supervisor's TaskGroup."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path

import fastapi_offline
import orjson
import psycopg
import uvicorn
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from psycopg_pool import PoolTimeout
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pantau import __version__
from pantau.errors import ConfigError
from pantau.health import Readiness
from pantau.openapi import ErrorBody, contract, error_response, install_error_handlers
from pantau.settings import HttpSettings
from pantau.supervisor import Worker

log = logging.getLogger(__name__)


class Liveness(BaseModel):
    status: str


class ReadinessReport(BaseModel):
    status: str
    checks: dict[str, str]


def build_app(
    registry: CollectorRegistry,
    readiness: Readiness,
    routers: Sequence[APIRouter] = (),
    *,
    max_body_bytes: int = HttpSettings().max_body_bytes,
) -> FastAPI:
    # Swagger UI and ReDoc served from the package, not a CDN: the command center may be offline.
    app = FastAPIOffline(
        title="Pantau",
        version=__version__,
        description="Telemetry ingestion for the smart-city command center",
        redoc_url=None,  # ours below: fastapi-offline's still loads ReDoc's logo from its CDN
        generate_unique_id_function=lambda route: route.name,  # operationIds for OpenAPI links
    )
    app.openapi = contract(app)  # type: ignore[method-assign]
    install_error_handlers(app)
    _add_redoc(app)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)

    @app.exception_handler(PoolTimeout)
    @app.exception_handler(psycopg.OperationalError)
    async def _database_down(request: Request, exc: Exception) -> JSONResponse:
        # Pantau keeps running (and spooling readings) while its database is down.
        return error_response(
            503,
            "the database is unavailable; nothing was changed: try again later",
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(psycopg.errors.UndefinedTable)
    async def _schema_missing(request: Request, exc: Exception) -> JSONResponse:
        return error_response(
            503,
            "the database schema is not ready yet (migrations pending): try again",
            headers={"Retry-After": "5"},
        )

    @app.get("/healthz", tags=["health"], summary="The process is alive")
    async def healthz() -> Liveness:
        return Liveness(status="alive")

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Database and broker reachable, migrations current",
        response_model=ReadinessReport,
        responses={503: {"model": ReadinessReport, "description": "not ready; `checks` says why"}},
    )
    async def readyz() -> JSONResponse:
        ready, checks = await readiness.evaluate()
        report = ReadinessReport(status="ready" if ready else "not ready", checks=checks)
        return JSONResponse(report.model_dump(), status_code=200 if ready else 503)

    @app.get(
        "/metrics",
        tags=["health"],
        summary="Prometheus metrics (text exposition format)",
        response_class=PlainTextResponse,
    )
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)
    return app


_REDOC_JS = "/docs-assets/redoc.standalone.js"
# ReDoc's sidebar shows "API docs by Redocly" with an <img> from its CDN; with no src the
# image is not requested (and hides itself on the error).
_REDOC_LOGO = b'"https://cdn.redoc.ly/redoc/logo-mini.svg"'


def _add_redoc(app: FastAPI) -> None:
    """/redoc with fastapi-offline's ReDoc bundle, minus its one request to the internet."""
    static = Path(fastapi_offline.__file__).parent / "static"

    @functools.cache
    def bundle() -> bytes:
        script = (static / "redoc.standalone.js").read_bytes()
        if _REDOC_LOGO not in script:
            log.warning("ReDoc bundle without the expected logo URL; serving it unchanged")
        return script.replace(_REDOC_LOGO, b'""')

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{_REDOC_JS}",
            redoc_favicon_url=f"{root}/static-offline-docs/favicon.png",
            with_google_fonts=False,
        )

    @app.get(_REDOC_JS, include_in_schema=False)
    async def redoc_js() -> Response:
        script = await asyncio.to_thread(bundle)
        return Response(
            script,
            media_type="text/javascript; charset=utf-8",
            headers={"Cache-Control": "public, max-age=86400"},
        )


class BodyTooLarge(HTTPException):
    """A request body passed `http.max_body_bytes`; answered 413 in the API's error shape."""

    def __init__(self, limit: int, size: int | None = None) -> None:
        what = f"request body of {size} bytes" if size is not None else "request body"
        super().__init__(
            413,
            f"{what} is over the limit of {limit} bytes (http.max_body_bytes); "
            "expected a smaller body: split the upload",
        )


class BodyLimit:
    """Pure ASGI middleware bounding every request body: a `Content-Length` over the limit is
    answered 413 before a byte of the body is read; a body without one (chunked) is counted as
    the route reads it, and the read that passes the limit raises BodyTooLarge (413). The rest
    of the body is never handed to the app: the server discards it as it arrives."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    size = int(value)
                except ValueError:
                    break  # the server rejects a malformed Content-Length itself
                if size > limit:
                    await _reject(send, BodyTooLarge(limit, size))
                    return
                break
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge as exc:  # a route that let it through; FastAPI's own answer 413
            if started:
                raise
            await _reject(send, exc)


async def _reject(send: Send, exc: BodyTooLarge) -> None:
    body = orjson.dumps(ErrorBody(detail=exc.detail).model_dump())
    await send(
        {
            "type": "http.response.start",
            "status": exc.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def bind(settings: HttpSettings) -> socket.socket:
    """Bind the HTTP port up front so a taken port is a clear error at start, not a retry loop."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"http.port = {settings.port} on {settings.host} cannot be used ({exc.strerror}); "
            "expected a free port: set PANTAU_HTTP__PORT or [http] port"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the service owns SIGINT/SIGTERM and stops us through `should_exit`


def http_worker(app: FastAPI, sock: socket.socket, trusted_proxies: list[str]) -> Worker:
    """Serve `app` on `sock`. X-Forwarded-For/-Proto are believed only from `trusted_proxies`
    (addresses or networks); with none, uvicorn's proxy-header handling is off altogether (its
    own default would trust 127.0.0.1, so anyone on the machine could claim HTTPS)."""

    async def run(stop: asyncio.Event) -> None:
        config = uvicorn.Config(
            app,
            log_config=None,
            lifespan="off",
            timeout_graceful_shutdown=5,
            proxy_headers=bool(trusted_proxies),
            forwarded_allow_ips=trusted_proxies or [],
        )
        server = _Server(config)
        async with asyncio.TaskGroup() as group:
            # uvicorn closes the sockets it serves; a dup keeps the port bound across restarts.
            serving = group.create_task(server.serve(sockets=[sock.dup()]))
            stopping = group.create_task(stop.wait())
            await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            server.should_exit = True
            stopping.cancel()

    return Worker("http", run, needs_database=False)
