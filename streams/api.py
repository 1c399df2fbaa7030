"""The cameras over HTTP, under /api/v1: their state, their stream settings (URLs always
redacted), the latest snapshot (or the "offline since ..." placeholder) and its history. Reads
need an operator token, changing a camera's stream a technician's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.utils import formatdate
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, Path, Query, Request, Response

from pantau.auth import Principal, require
from pantau.ids import DEVICE_ID_PATTERN
from streams import cameras
from streams.snapshots import SnapshotStore

router = APIRouter(prefix="/api/v1", tags=["cameras"])
Operator = Annotated[Principal, Depends(require("operator"))]
Technician = Annotated[Principal, Depends(require("technician"))]
DeviceId = Annotated[str, Path(pattern=DEVICE_ID_PATTERN, examples=["cctv-tambun-01"])]
HistoryName = Annotated[
    str,
    Path(
        pattern=r"^[0-9]{8}T[0-9]{6}\.[0-9]{3}Z$",
        description="the snapshot's `name` from the history (its UTC time), e.g. "
        "20261201T070300.000Z",
    ),
]
MAX_LIST = 5000
MAX_HISTORY = 1000

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such device, or it is not a camera"}
}
_JPEG = {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}
_SNAPSHOT_HEADERS = {
    "X-Camera-State": {
        "description": "the newest check: ok, frozen, black, covered, blurred, offline, or "
        "unknown (never checked)",
        "schema": {"type": "string"},
    },
    "X-Snapshot-Age": {
        "description": "seconds since the picture was taken (the picture, not a placeholder)",
        "schema": {"type": "integer"},
    },
    "X-Placeholder": {
        "description": "a placeholder was served instead: down (offline or a bad picture), "
        "stale (older than 3 probe intervals) or none (no picture yet)",
        "schema": {"type": "string"},
    },
    "X-Camera-Since": {
        "description": "when the current outage started (ISO 8601, WIB), when there is one",
        "schema": {"type": "string"},
    },
    "Last-Modified": {"description": "when the picture was taken", "schema": {"type": "string"}},
}
_LINKS = {
    "GetCamera": {
        "operationId": "get_camera",
        "parameters": {"device_id": "$response.body#/device_id"},
    },
    "CameraSnapshot": {
        "operationId": "camera_snapshot",
        "parameters": {"device_id": "$response.body#/device_id"},
    },
}


@asynccontextmanager
async def _db(request: Request) -> AsyncIterator[psycopg.AsyncConnection]:
    async with request.app.state.pool.connection() as conn:
        yield conn


def _store(request: Request) -> SnapshotStore:
    store: SnapshotStore = request.app.state.snapshots
    return store


@router.get(
    "/cameras",
    summary="Cameras with their state, newest check, stream (redacted) and snapshot age",
    description=f"Every device of type `camera`, by id; `limit` at most {MAX_LIST}. A camera "
    "registered without a stream yet has `configured: false`.",
)
async def list_cameras(
    request: Request,
    who: Operator,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 1000,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[cameras.Camera]:
    async with _db(request) as conn:
        return await cameras.list_cameras(conn, _store(request), limit, offset)


@router.get(
    "/cameras/{device_id}",
    summary="One camera: state, newest check, stream (redacted), thresholds",
    responses={200: {"description": "the camera", "links": _LINKS}, **_NOT_FOUND},
)
async def get_camera(request: Request, device_id: DeviceId, who: Operator) -> cameras.Camera:
    async with _db(request) as conn:
        return await cameras.get_camera(conn, _store(request), device_id)


@router.put(
    "/cameras/{device_id}",
    summary="Set a camera's stream: RTSP URL, probe interval, enabled, thresholds",
    description="Replaces the camera's stream settings whole (left out: the default). The "
    "device must be registered with type `camera`. The URL is stored with its credentials and "
    "never shown again (nor echoed in an error); the change is audited (URL redacted) and the "
    "probes pick it up at once.",
    responses={
        200: {"description": "changed", "links": _LINKS},
        201: {"description": "the camera's stream is set for the first time", "links": _LINKS},
        404: {"description": "no such device"},
        409: {"description": "the device is not a camera, or it is retired"},
    },
)
async def put_camera(
    request: Request,
    device_id: DeviceId,
    body: cameras.CameraIn,
    response: Response,
    who: Technician,
) -> cameras.Camera:
    async with _db(request) as conn:
        async with conn.transaction():
            created = await cameras.set_camera(conn, device_id, body, who.actor)
        camera = await cameras.get_camera(conn, _store(request), device_id)
    if created:
        response.status_code = 201
    return camera


@router.get(
    "/cameras/{device_id}/snapshot.jpg",
    operation_id="camera_snapshot",
    summary="The camera's latest picture, or a placeholder when it is down or stale",
    description="The latest JPEG, with its age in `X-Snapshot-Age`. Instead of a picture that "
    'would mislead, a 1280x720 placeholder saying why ("KAMERA OFFLINE, offline sejak ..."): '
    "when the newest check or the outage detector says the camera is down, when the picture is "
    "older than three probe intervals, or when there is none yet (`X-Placeholder` says which). "
    "Always 200 with a JPEG, so a wall's `<img>` shows it.",
    response_class=Response,
    responses={
        200: {"description": "a JPEG", "content": _JPEG, "headers": _SNAPSHOT_HEADERS},
        **_NOT_FOUND,
    },
)
async def camera_snapshot(request: Request, device_id: DeviceId, who: Operator) -> Response:
    async with _db(request) as conn:
        found = await cameras.snapshot(conn, _store(request), device_id)
    return Response(found.jpeg, media_type="image/jpeg", headers=found.headers())


@router.get(
    "/cameras/{device_id}/snapshots",
    summary="The camera's kept snapshots, newest first",
    description="At most `streams.snapshot_history` are kept per camera, one every "
    f"`streams.snapshot_every_seconds` at most; `limit` at most {MAX_HISTORY}.",
    responses=_NOT_FOUND,
)
async def camera_snapshots(
    request: Request,
    device_id: DeviceId,
    who: Operator,
    limit: Annotated[int, Query(ge=1, le=MAX_HISTORY)] = 100,
) -> list[cameras.HistoryEntry]:
    async with _db(request) as conn:
        return await cameras.history(conn, device_id, limit)


@router.get(
    "/cameras/{device_id}/snapshots/{taken_at}.jpg",
    summary="One kept snapshot, by its name in the history",
    response_class=Response,
    responses={
        200: {"description": "the JPEG", "content": _JPEG},
        404: {"description": "no such camera, or no such snapshot kept"},
    },
)
async def camera_history_snapshot(
    request: Request, device_id: DeviceId, taken_at: HistoryName, who: Operator
) -> Response:
    async with _db(request) as conn:
        when, jpeg = await cameras.history_picture(conn, _store(request), device_id, taken_at)
    return Response(
        jpeg,
        media_type="image/jpeg",
        headers={
            "Last-Modified": formatdate(when.timestamp(), usegmt=True),
            "Cache-Control": "max-age=86400, immutable",  # a kept snapshot never changes
        },
    )
