"""/wall over HTTP: the page and its two assets (no token: the page signs in with the operator
token of its link), its data at `GET /api/v1/wall` (an operator's token), and each camera's
snapshot at a capability URL, `/wall/cameras/{id}/snapshot.jpg?key=K`, for the page's `<img>`s
and Grafana's panels, which can send no token."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Annotated

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import HTMLResponse
from prometheus_client import CollectorRegistry

from devices.registry import RegistryError
from grafana.settings import GrafanaSettings
from grafana.wall import data
from grafana.wall.tiles import GRID
from pantau import __version__
from pantau.auth import Principal, require
from pantau.ids import DEVICE_ID_PATTERN
from pantau.openapi import error_response
from streams import cameras
from streams.snapshots import SnapshotStore

Operator = Annotated[Principal, Depends(require("operator"))]
MAX_KEY = 128
_ASSETS = {"wall.js": "text/javascript", "wall.css": "text/css"}
# The page asks nothing of any other origin, and the browser holds it to that.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# A key is compared with a stand-in when the camera does not exist, so that a wrong key to a
# real camera and any key to a missing one take the same path.
_STAND_IN = "0" * 32


@dataclass(frozen=True)
class Page:
    html: bytes
    assets: dict[str, bytes]
    version: str


def load_page() -> Page:
    """The page and its assets, read once; the version is their hash (and Pantau's version), so
    a wall whose page changed reloads itself."""
    folder = resources.files("grafana.wall").joinpath("web")
    html = folder.joinpath("index.html").read_bytes()
    assets = {name: folder.joinpath(name).read_bytes() for name in _ASSETS}
    digest = hashlib.sha256(__version__.encode())
    for part in (html, *assets.values()):
        digest.update(hashlib.sha256(part).digest())
    version = digest.hexdigest()[:12]
    return Page(html.replace(b"{{VERSION}}", version.encode()), assets, version)


def page_router(settings: GrafanaSettings, registry: CollectorRegistry | None) -> APIRouter:
    """The page, its assets and its data (`grafana.wall_enabled`)."""
    page = load_page()
    api = APIRouter(tags=["wall"])

    @api.get(
        "/wall",
        summary="The command-center wall (HTML, 1920x1080, no token in the address)",
        description="One page that signs in from its link (`pantau token create --role operator "
        "--wall`: the token rides in the fragment, which never reaches a server) and reads "
        "`GET /api/v1/wall` every `grafana.wall_refresh_seconds`.",
        response_class=HTMLResponse,
    )
    async def wall_page() -> Response:
        return Response(
            page.html,
            media_type="text/html; charset=utf-8",
            headers={
                "Cache-Control": "no-cache",
                "Referrer-Policy": "no-referrer",
                "Content-Security-Policy": _CSP,
            },
        )

    @api.get("/wall/", include_in_schema=False)
    async def wall_slash() -> Response:
        # Relative, so that a proxy serving Pantau under a prefix keeps it.
        return Response(status_code=307, headers={"Location": "../wall"})

    for name, media_type in _ASSETS.items():
        api.add_api_route(
            f"/wall/{name}", _asset(page.assets[name], media_type), include_in_schema=False
        )

    @api.get(
        "/api/v1/wall",
        summary="Everything the wall shows, from the wall.* views in one snapshot",
        description=f"Counts by state (totals, per pillar, the {len(GRID)} kecamatan with "
        "their tile on the map), current outages (area outages first; device outages grouped "
        "under one are counted in `grouped`), value alarms, flood gauges with their Siaga "
        "levels, camera tiles and the pipeline's health. Each list holds at most `limit` rows "
        "and says how many there are. Read as the database role `pantau_wall`. Times in WIB.",
        responses={
            503: {
                "description": "the database is unavailable, or the role pantau_wall "
                "is missing (`detail` says which)"
            }
        },
    )
    async def get_wall(
        request: Request,
        who: Operator,
        limit: Annotated[
            int, Query(ge=1, le=data.MAX_ROWS, description="rows per list, at most")
        ] = 50,
    ) -> data.Wall:
        try:
            async with request.app.state.pool.connection() as conn:
                return await data.read(
                    conn,
                    limit=limit,
                    version=page.version,
                    title=settings.wall_title,
                    refresh_seconds=settings.wall_refresh_seconds,
                    registry=registry,
                )
        except data.WallRoleMissing as exc:
            raise HTTPException(503, str(exc), headers={"Retry-After": "60"}) from exc

    return api


def snapshot_router(snapshots: SnapshotStore) -> APIRouter:
    """The cameras' capability URLs, served also with the wall off: Grafana's panels use them."""
    api = APIRouter(tags=["wall"])

    @api.get(
        # {camera_id}, not {device_id}: no other answer holds this name, so an API client (or
        # schemathesis) infers no link to it from a device; the key comes from wall.camera_tiles.
        "/wall/cameras/{camera_id}/snapshot.jpg",
        operation_id="wall_camera_snapshot",
        summary="A camera's snapshot at a capability URL (no token: the key is the capability)",
        description="Serves exactly what `GET /api/v1/cameras/{id}/snapshot.jpg` serves (the "
        "latest JPEG, or the placeholder saying why there is none, with the same headers) "
        "when `key` is the camera's `snapshot_key` (`wall.camera_tiles.snapshot_path` gives "
        "the whole path). A wrong or missing key, an unknown or retired camera: 404 alike.",
        response_class=Response,
        responses={
            200: {
                "description": "a JPEG",
                "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
            },
            404: {"description": "no camera with this key"},
            503: {"description": "the database is unavailable; try again (Retry-After)"},
        },
    )
    async def wall_snapshot(
        request: Request,
        camera_id: Annotated[
            str,
            Path(pattern=DEVICE_ID_PATTERN, examples=["cam-setu-01"], description="its device id"),
        ],
        key: Annotated[
            str | None, Query(max_length=MAX_KEY, description="the camera's snapshot key")
        ] = None,
    ) -> Response:
        async with request.app.state.pool.connection() as conn:
            if not await _key_matches(conn, camera_id, key):
                return _no_snapshot()
            try:
                found = await cameras.snapshot(conn, snapshots, camera_id)
            except RegistryError:  # no longer a camera since the key was read
                return _no_snapshot()
        headers = found.headers()
        # A capability URL: no shared cache keeps it, and no page it is shown in passes it on.
        headers["Cache-Control"] = "private, no-cache"
        headers["Referrer-Policy"] = "no-referrer"
        return Response(found.jpeg, media_type="image/jpeg", headers=headers)

    return api


async def _key_matches(conn: psycopg.AsyncConnection, device_id: str, key: str | None) -> bool:
    cur = await conn.execute(
        "SELECT c.snapshot_key FROM cameras c JOIN devices d ON d.device_id = c.device_id"
        " WHERE c.device_id = %s AND d.status <> 'retired'",
        (device_id,),
    )
    row = await cur.fetchone()
    stored = str(row[0]) if row else _STAND_IN
    given = key or ""
    same = hmac.compare_digest(given.encode(), stored.encode())
    return same and row is not None and bool(key)


def _no_snapshot() -> Response:
    response = error_response(404, "no camera snapshot here (a wrong key, or no such camera)")
    response.headers["Cache-Control"] = "no-store"
    return response


def _asset(body: bytes, media_type: str) -> Callable[[], Awaitable[Response]]:
    async def asset() -> Response:
        return Response(
            body,
            media_type=f"{media_type}; charset=utf-8",
            # The page asks for it with ?v=<version>: a new version is a new URL.
            headers={"Cache-Control": "public, max-age=86400"},
        )

    return asset
