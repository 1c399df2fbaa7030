"""The registry's HTTP API, under /api/v1. Reads need an operator token, changes a technician's.
A device's ETag is its version: PATCH and retire need `If-Match`, and get 412 when someone else
changed the device in between."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from devices import exchange, readings, registry
from devices.credentials import renew
from devices.models import (
    AuditEntry,
    Device,
    DeviceIn,
    DevicePatch,
    DeviceType,
    DeviceTypeId,
    KecamatanOut,
    KecamatanRef,
    PendingDevice,
    PillarId,
    PillarOut,
    Reading,
    Registered,
    Status,
)
from devices.setup import registration
from pantau.auth import Principal, require
from pantau.ids import DEVICE_ID_PATTERN, METRIC_PATTERN
from pantau.openapi import VISIBLE, error_response, invalid

router = APIRouter(prefix="/api/v1", tags=["devices"])
Operator = Annotated[Principal, Depends(require("operator"))]
Technician = Annotated[Principal, Depends(require("technician"))]
Admin = Annotated[Principal, Depends(require("admin"))]
IfMatch = Annotated[
    str,
    Header(
        pattern=r'^(W/)?"?[0-9]{1,9}"?$',
        description='the ETag you read, e.g. "3"; without it: 428',
    ),
]
DeviceId = Annotated[str, Path(pattern=DEVICE_ID_PATTERN, examples=["wl-setu-01"])]
SearchText = Annotated[
    str | None,
    Query(max_length=200, pattern=VISIBLE, description="text in the id, name or address note"),
]
MAX_OFFSET = 1_000_000

# Statuses beside the ones every operation gets from pantau.openapi (401, 403, 422, 503...).
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such device"}}
_CHANGE: dict[int | str, dict[str, Any]] = {
    **_NOT_FOUND,
    412: {"description": "the device changed since you read it (If-Match)"},
    428: {"description": "If-Match is missing: read the device first"},
}


# OpenAPI links: what a client (and the schema fuzzer's stateful phase) may do next with a
# device it created (`#/device/device_id` in the answer) or read (`#/device_id`); a change's
# If-Match is the answer's ETag.
def _links(pointer: str, *, created: bool = False) -> dict[str, Any]:
    device = {"device_id": f"$response.body#{pointer}"}
    changed = {**device, "header.If-Match": "$response.header.ETag"}
    links: dict[str, Any] = {
        "PatchDevice": {"operationId": "patch_device", "parameters": changed},
        "RetireDevice": {"operationId": "retire_device", "parameters": changed},
        "RenewCredentials": {"operationId": "renew_credentials", "parameters": device},
    }
    if created:
        links["GetDevice"] = {"operationId": "get_device", "parameters": device}
    else:
        links["LatestReadings"] = {"operationId": "latest", "parameters": device}
        links["ReadingsHistory"] = {"operationId": "readings_history", "parameters": device}
    return links


@asynccontextmanager
async def _db(request: Request) -> AsyncIterator[psycopg.AsyncConnection]:
    async with request.app.state.pool.connection() as conn:
        yield conn


def registry_error_response(exc: registry.RegistryError) -> JSONResponse:
    if isinstance(exc, registry.Invalid):
        return invalid(exc.problems)
    return error_response(exc.status, str(exc))


def _with_etag(device: Device, response: Response) -> Device:
    response.headers["ETag"] = device.etag
    return device


def _version(if_match: str) -> int:
    return int(if_match.strip().removeprefix("W/").strip('"'))  # the header's pattern holds


@router.get("/devices", summary="List devices, with filters")
async def list_devices(
    request: Request,
    who: Operator,
    kecamatan: Annotated[
        KecamatanRef | None, Query(description="id or name (any case), e.g. setu or Setu")
    ] = None,
    device_type: Annotated[DeviceTypeId | None, Query(alias="type")] = None,
    status: Status | None = None,
    pillar: PillarId | None = None,
    q: SearchText = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[Device]:
    async with _db(request) as conn:
        try:
            return await registry.list_devices(
                conn, registry.Filters(kecamatan, device_type, status, pillar, q, limit, offset)
            )
        except registry.Invalid as exc:  # named as the query parameters the caller sent
            raise registry.Invalid(
                [
                    p.model_copy(update={"field": _PARAMS.get(p.field, p.field)})
                    for p in exc.problems
                ]
            ) from None


_PARAMS = {"device_type": "type", "text": "q"}
_TIME = "ISO 8601 with an offset, years 1970 to 2999, e.g. 2026-12-01T00:00+07:00"
_DATE_TIME = {"format": "date-time"}


@router.post(
    "/devices",
    status_code=201,
    summary="Register a device",
    responses={
        201: {
            "description": "registered; `ETag` is its version",
            "links": _links("/device/device_id", created=True),
        },
        409: {"description": "a device with this id is registered already"},
    },
)
async def create_device(
    request: Request, body: DeviceIn, response: Response, who: Technician
) -> Registered:
    async with _db(request) as conn, conn.transaction():
        # One transaction: if the broker cannot issue credentials, nothing is registered.
        device = await registry.create_device(conn, body, who.actor)
        credentials = await request.app.state.credentials.issue(conn, device, who.actor)
        if credentials is not None:
            device = await registry.get_device(conn, device.device_id)
        registered = await registration(conn, device, credentials, request.app.state.settings.mqtt)
    if credentials is not None:
        registered.warning = registry.credentials_warning(device)
    _with_etag(device, response)
    response.headers["Location"] = f"/api/v1/devices/{device.device_id}"
    return registered


@router.post(
    "/devices/{device_id}/credentials",
    status_code=201,
    summary="Issue new MQTT credentials (an imported device, a lost password); the old "
    "password stops working",
    description="A device in maintenance gets them too, with a `warning`: its broker client "
    "stays disabled until the device is active again.",
    responses={**_NOT_FOUND, 409: {"description": "retired, or no credentials managed"}},
)
async def renew_credentials(request: Request, device_id: DeviceId, who: Technician) -> Registered:
    async with _db(request) as conn, conn.transaction():
        device = await registry.get_device(conn, device_id)
        credentials = await renew(conn, device, request.app.state.credentials, who.actor)
        device = await registry.get_device(conn, device_id)
        registered = await registration(conn, device, credentials, request.app.state.settings.mqtt)
    registered.warning = registry.credentials_warning(device)
    return registered


@router.get(
    "/devices/export",
    summary="Export devices as CSV, XLSX or GeoJSON",
    response_class=Response,
    responses={
        200: {
            "description": "the devices, in the format asked for",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                exchange.XLSX_TYPE: {"schema": {"type": "string", "format": "binary"}},
                "application/geo+json": {"schema": {"type": "object"}},
            },
        }
    },
)
async def export_devices(
    request: Request,
    who: Operator,
    format: Literal["csv", "xlsx", "geojson"] = "csv",
    kecamatan: Annotated[KecamatanRef | None, Query(description="id or name (any case)")] = None,
    device_type: Annotated[DeviceTypeId | None, Query(alias="type")] = None,
    status: Status | None = None,
    delimiter: Annotated[
        Literal[",", ";"],
        Query(description="CSV: `;` with decimal commas, for Excel in the id-ID locale"),
    ] = ",",
) -> Response:
    async with _db(request) as conn:
        devices = await registry.list_devices(
            conn, registry.Filters(kecamatan, device_type, status, limit=1_000_000)
        )
    if format == "csv":
        return Response(exchange.to_csv(devices, delimiter), media_type="text/csv; charset=utf-8")
    if format == "xlsx":
        return Response(
            await asyncio.to_thread(exchange.to_xlsx, devices),
            media_type=exchange.XLSX_TYPE,
            headers={"Content-Disposition": 'attachment; filename="pantau-devices.xlsx"'},
        )
    return Response(exchange.to_geojson(devices), media_type="application/geo+json")


@router.post(
    "/devices/import",
    summary="Import devices from CSV, XLSX or GeoJSON: all or nothing",
    description="Creates new devices and updates registered ones. CSV may be separated by "
    "`,` or `;` (with decimal commas, as Excel writes it in id-ID). At most "
    "`devices.import_max_rows` rows (`413` past it).",
    responses={
        413: {"description": "over http.max_body_bytes, or more rows than devices.import_max_rows"},
        415: {"description": "a Content-Type other than the four above"},
        422: {"description": "what is wrong, row by row (`problems`), or not a file of its type"},
    },
    openapi_extra={
        "requestBody": {
            "content": {
                "text/csv": {},
                exchange.XLSX_TYPE: {},
                "application/geo+json": {},
                "application/json": {},
            },
            "required": True,
        }
    },
)
async def import_devices(request: Request, who: Technician) -> dict[str, int]:
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    max_rows = request.app.state.settings.devices.import_max_rows
    async with contextlib.AsyncExitStack() as stack:
        if kind in ("text/csv", exchange.XLSX_TYPE):
            file = stack.enter_context(await exchange.spooled(request.stream()))
            source = (
                exchange.csv_source(file, max_rows)
                if kind == "text/csv"
                else exchange.xlsx_source(file)
            )
        elif kind in ("application/geo+json", "application/json"):
            source = exchange.geojson_source(await request.body())
        else:
            raise exchange.UnsupportedType(
                f"Content-Type {kind!r}: expected text/csv or application/geo+json, or "
                f"{exchange.XLSX_TYPE} for an XLSX workbook"
            )
        conn = await stack.enter_async_context(_db(request))
        async with conn.transaction():
            imported = await exchange.import_devices(conn, source, who.actor, max_rows)
            for device in imported.follow:  # moved or retired devices: their clients follow
                await request.app.state.credentials.follow(conn, device, who.actor)
    return {
        "created": imported.created,
        "updated": imported.updated,
        "unchanged": imported.unchanged,
    }


@router.get(
    "/devices/pending",
    summary="Devices that report but are not registered, with the command that adopts each",
)
async def pending_devices(request: Request, who: Operator) -> list[PendingDevice]:
    async with _db(request) as conn:
        return await registry.pending(conn)


@router.get(
    "/devices/{device_id}",
    summary="One device; `ETag` is its version",
    responses={
        200: {"description": "the device", "links": _links("/device_id")},
        **_NOT_FOUND,
    },
)
async def get_device(
    request: Request, device_id: DeviceId, response: Response, who: Operator
) -> Device:
    async with _db(request) as conn:
        return _with_etag(await registry.get_device(conn, device_id), response)


@router.patch(
    "/devices/{device_id}",
    summary="Change a device (If-Match)",
    responses={200: {"description": "changed", "links": _links("/device_id")}, **_CHANGE},
)
async def patch_device(
    request: Request,
    device_id: DeviceId,
    body: DevicePatch,
    response: Response,
    who: Technician,
    if_match: IfMatch,
) -> Device:
    version = _version(if_match)
    async with _db(request) as conn, conn.transaction():
        device = await registry.update_device(conn, device_id, body, version, who.actor)
        await request.app.state.credentials.follow(conn, device, who.actor)
    return _with_etag(device, response)


@router.post(
    "/devices/{device_id}/retire",
    summary="Retire a device: its MQTT credentials stop working (If-Match)",
    responses={**_CHANGE, 409: {"description": "already retired: nothing was changed"}},
)
async def retire_device(
    request: Request, device_id: DeviceId, response: Response, who: Technician, if_match: IfMatch
) -> Device:
    version = _version(if_match)
    async with _db(request) as conn, conn.transaction():
        device = await registry.retire_device(conn, device_id, version, who.actor)
        await request.app.state.credentials.follow(conn, device, who.actor)
    return _with_etag(device, response)


@router.get(
    "/devices/{device_id}/readings/latest",
    summary="The newest value of each metric",
    responses=_NOT_FOUND,
)
async def latest(request: Request, device_id: DeviceId, who: Operator) -> list[Reading]:
    async with _db(request) as conn:
        await registry.get_device(conn, device_id)
        return await registry.latest_readings(conn, device_id)


@router.get(
    "/devices/{device_id}/readings",
    summary="A device's readings history, raw or from the 1 minute / 1 hour rollups (JSON or CSV)",
    description=(
        "Times in ISO 8601 with an offset (`from`, `to`: offset required; answers in WIB, "
        "+07:00); the range is [from, to), by default the last 24 hours. `resolution`: raw, 1m, "
        "1h, or auto (the finest that covers the range and fits the row limit). Bounded: raw "
        f"answers at most {readings.MAX_RANGE['raw'].days} days, 1m "
        f"{readings.MAX_RANGE['1m'].days} days, 1h {readings.MAX_RANGE['1h'].days} days, and at "
        f"most {readings.MAX_ROWS} rows; past a bound, 422 says which and what to ask instead. "
        "CSV with `format=csv` or `Accept: text/csv`."
    ),
    response_model=readings.History,
    responses={
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
        **_NOT_FOUND,
        422: {
            "description": "what is wrong, or which bound was passed: `from` not before `to`, "
            "a range past its resolution's, a metric the device's type does not have"
        },
    },
)
async def readings_history(
    request: Request,
    device_id: DeviceId,
    who: Operator,
    metric: Annotated[
        list[Annotated[str, Query(pattern=METRIC_PATTERN)]] | None,
        Query(
            max_length=readings.MAX_METRICS,
            description="one or more (repeat it); default: every metric",
        ),
    ] = None,
    start: Annotated[
        str | None, Query(alias="from", description=_TIME, json_schema_extra=_DATE_TIME)
    ] = None,
    end: Annotated[
        str | None,
        Query(alias="to", description="default: now; " + _TIME, json_schema_extra=_DATE_TIME),
    ] = None,
    resolution: Literal["raw", "1m", "1h", "auto"] = "auto",
    format: Annotated[
        Literal["json", "csv"] | None, Query(description="json or csv (or send Accept)")
    ] = None,
) -> Response:
    as_csv = format == "csv" or (format is None and "text/csv" in request.headers.get("accept", ""))
    query = readings.plan(device_id, metric or [], start, end, resolution, datetime.now(UTC))
    async with _db(request) as conn:
        found = await readings.history(conn, query)
    if as_csv:
        return Response(
            readings.to_csv(found),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{readings.csv_filename(found)}"'
            },
        )
    return Response(readings.to_json(found), media_type="application/json")


@router.get("/device-types", summary="Device types with their metrics and thresholds")
async def device_types(request: Request, who: Operator) -> list[DeviceType]:
    async with _db(request) as conn:
        return await registry.device_types(conn)


@router.get("/kecamatan", summary="The 23 kecamatan, each with a representative point")
async def kecamatan(request: Request, who: Operator) -> list[KecamatanOut]:
    async with _db(request) as conn:
        return await registry.kecamatan(conn)


@router.get("/pillars", summary="The six smart-city pillars")
async def pillars(request: Request, who: Operator) -> list[PillarOut]:
    async with _db(request) as conn:
        return await registry.pillars(conn)


@router.get("/audit", summary="Who changed what, newest first")
async def audit(
    request: Request,
    who: Admin,
    entity: Literal["device", "token", "maintenance", "camera"] | None = None,
    entity_id: Annotated[str | None, Query(max_length=200, pattern=VISIBLE)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEntry]:
    async with _db(request) as conn:
        return await registry.audit_entries(conn, entity, entity_id, limit)
