"""The outage history and maintenance windows over HTTP, under /api/v1: reads need an operator
token, planning and ending windows a technician's. Times are answered in WIB (+07:00)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, Path, Query, Request

from devices import readings, registry
from devices.models import DeviceTypeId, KecamatanRef
from devices.outages import history
from pantau.auth import Principal, require
from pantau.ids import DEVICE_ID_PATTERN

router = APIRouter(prefix="/api/v1", tags=["outages"])
Operator = Annotated[Principal, Depends(require("operator"))]
Technician = Annotated[Principal, Depends(require("technician"))]
_TIME = "ISO 8601 with an offset, years 1970 to 2999, e.g. 2026-12-01T00:00+07:00"
_DATE_TIME = {"format": "date-time"}
_MAX_ID = 2**63 - 1
OutageId = Annotated[int, Path(ge=1, le=_MAX_ID)]
WindowId = Annotated[int, Path(ge=1, le=_MAX_ID)]
_PARAMS = {"device_type": "type"}
_END_LINK = {
    "EndWindow": {
        "operationId": "end_maintenance_window",
        "parameters": {"window_id": "$response.body#/id"},
    }
}


@asynccontextmanager
async def _db(request: Request) -> AsyncIterator[psycopg.AsyncConnection]:
    async with request.app.state.pool.connection() as conn:
        yield conn


def _as_sent(exc: registry.Invalid) -> registry.Invalid:
    """The problems named as the query parameters the caller sent."""
    return registry.Invalid(
        [p.model_copy(update={"field": _PARAMS.get(p.field, p.field)}) for p in exc.problems]
    )


@router.get(
    "/outages",
    summary="Outages and value alarms: current ones first, then the rest, newest first",
    description="`from`/`to`: the outages overlapping [from, to). Times in WIB (+07:00); "
    "`duration_seconds` runs to now for a current one.",
    responses={422: {"description": "what is wrong: an unknown name, `to` not after `from`"}},
)
async def list_outages(
    request: Request,
    who: Operator,
    kind: history.Kind | None = None,
    kecamatan: Annotated[
        KecamatanRef | None, Query(description="id or name (any case), e.g. setu or Setu")
    ] = None,
    device_type: Annotated[DeviceTypeId | None, Query(alias="type")] = None,
    state: history.State = "all",
    start: Annotated[
        str | None, Query(alias="from", description=_TIME, json_schema_extra=_DATE_TIME)
    ] = None,
    end: Annotated[
        str | None, Query(alias="to", description=_TIME, json_schema_extra=_DATE_TIME)
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[history.Outage]:
    query = history.Query(
        kind,
        kecamatan,
        device_type,
        state,
        readings.parse_time("from", start, None) if start is not None else None,
        readings.parse_time("to", end, None) if end is not None else None,
        limit,
        offset,
    )
    async with _db(request) as conn:
        try:
            return await history.outages(conn, query)
        except registry.Invalid as exc:
            raise _as_sent(exc) from None


@router.get(
    "/outages/{outage_id}",
    summary="One outage; an area outage with the device outages it groups",
    responses={404: {"description": "no such outage"}},
)
async def get_outage(
    request: Request, outage_id: OutageId, who: Operator
) -> history.OutageWithChildren:
    async with _db(request) as conn:
        return await history.outage(conn, outage_id)


@router.get(
    "/maintenance-windows",
    summary="Maintenance windows, newest start first",
    description="`kecamatan` finds the kecamatan's windows and its devices' own.",
)
async def list_windows(
    request: Request,
    who: Operator,
    device: Annotated[str | None, Query(pattern=DEVICE_ID_PATTERN)] = None,
    kecamatan: Annotated[KecamatanRef | None, Query(description="id or name (any case)")] = None,
    current: Annotated[bool | None, Query(description="only those in force now (or not)")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> list[history.Window]:
    async with _db(request) as conn:
        return await history.windows(conn, device, kecamatan, current, limit)


@router.post(
    "/maintenance-windows",
    status_code=201,
    summary="Plan a maintenance window for a device or a whole kecamatan",
    description="Inside it the devices never alert, and its time is left out of availability.",
    responses={
        201: {"description": "planned", "links": _END_LINK},
        404: {"description": "no such device"},
        422: {"description": "what is wrong, e.g. `ends_at` not after `starts_at`"},
    },
)
async def create_window(
    request: Request, body: history.WindowIn, who: Technician
) -> history.Window:
    async with _db(request) as conn:
        return await history.add_window(conn, body, who.actor)


_END: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such window"},
    409: {"description": "it has ended already: nothing was changed"},
}


@router.post(
    "/maintenance-windows/{window_id}/end",
    operation_id="end_maintenance_window",
    summary="End a maintenance window now (one not started yet is cancelled)",
    responses=_END,
)
async def end_window(request: Request, window_id: WindowId, who: Technician) -> history.Window:
    async with _db(request) as conn:
        return await history.end_window(conn, window_id, who.actor)
