"""`GET /api/v1/availability`: the evaluation report's figures as JSON, for operators."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from devices.outages import availability
from devices.readings import parse_time
from devices.registry import Invalid
from pantau.auth import Principal, require

router = APIRouter(prefix="/api/v1", tags=["outages"])
Operator = Annotated[Principal, Depends(require("operator"))]
_TIME = "ISO 8601 with an offset, years 1970 to 2999, e.g. 2026-12-01T00:00+07:00"
_DATE_TIME = {"format": "date-time"}


@router.get(
    "/availability",
    summary="Availability per pillar, kecamatan or device type over a period",
    description=(
        "Over [from, to): per device, the time expected (registered, not retired, outside "
        "maintenance windows) and the device outages inside it; availability = 1 - down / "
        "expected. Groups sum their devices' times. `to` is cut at now; at most "
        f"{availability.MAX_SPAN.days} days. Also the worst devices, the outage timeline "
        "(device and area outages) and per pillar how many active devices reported at all."
    ),
    response_model=availability.Availability,
    responses={422: {"description": "from not before to, a period too long or in the future"}},
)
async def get_availability(
    request: Request,
    who: Operator,
    start: Annotated[str, Query(alias="from", description=_TIME, json_schema_extra=_DATE_TIME)],
    end: Annotated[str, Query(alias="to", description=_TIME, json_schema_extra=_DATE_TIME)],
    by: availability.By = "pillar",
) -> Response:
    problems = []
    times: dict[str, datetime] = {}
    for field, text in (("from", start), ("to", end)):
        try:
            times[field] = parse_time(field, text, None)
        except Invalid as exc:
            problems.extend(exc.problems)
    if problems:
        raise Invalid(problems)
    chosen = availability.period(times["from"], times["to"], datetime.now(UTC))
    async with request.app.state.pool.connection() as conn:
        figures = await availability.availability(conn, chosen, by)
    return Response(availability.to_json(figures), media_type="application/json")
