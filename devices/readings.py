"""A device's readings history: raw readings, or the 1 minute and 1 hour rollups for long ranges,
for integrators and analysts (the API's JSON and CSV, `pantau devices readings`).

Every answer is bounded: a range per resolution (`MAX_RANGE`) and a number of rows (`MAX_ROWS`);
past either the caller gets an error naming the limit and what to ask for instead. Times go out
in ISO 8601 with their offset, in WIB (+07:00), as Pantau shows times everywhere.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Literal, get_args

import orjson
import psycopg
from psycopg import sql
from pydantic import BaseModel, Field

from devices.models import Problem
from devices.registry import Invalid, get_device
from pantau.cliapp import WIB
from pantau.ids import METRIC

Resolution = Literal["raw", "1m", "1h"]
RESOLUTIONS: tuple[Resolution, ...] = get_args(Resolution)
# The most rows one answer carries: 31 days of one metric at 1 minute fit, with room to spare.
MAX_ROWS = 50_000
# The longest range each resolution answers; `auto` picks the finest one that covers the range.
MAX_RANGE: dict[Resolution, timedelta] = {
    "raw": timedelta(days=2),
    "1m": timedelta(days=31),
    "1h": timedelta(days=3660),
}
BUCKET: dict[Resolution, timedelta] = {"1m": timedelta(minutes=1), "1h": timedelta(hours=1)}
DEFAULT_RANGE = timedelta(hours=24)
# `from` and `to` lie in [EARLIEST, LATEST): far enough from datetime's year 1 and 9999 that the
# default range and WIB never step outside it, and wider than any reading can be.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)
MAX_METRICS = 50
_TABLE = {"1m": "readings_1m", "1h": "readings_1h"}
CSV_COLUMNS = ("device_id", "metric", "time", "value", "min", "max", "samples")


class Point(BaseModel):
    """One row of an answer (the schema of `History.readings`)."""

    time: datetime = Field(description="the reading's time, or the start of its bucket (WIB)")
    metric: str
    value: float = Field(description="the reading, or the bucket's average")
    min: float
    max: float
    samples: int = Field(description="readings in the bucket (1 for raw readings)")


class History(BaseModel):
    """The answer's shape, for the OpenAPI schema; answers are built by `to_json`."""

    device_id: str
    resolution: Resolution = Field(description="what was answered (`auto` resolved)")
    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")
    metrics: list[str] = Field(description="the metrics asked for; empty: all")
    count: int
    max_rows: int = MAX_ROWS
    readings: list[Point]


# time (WIB), metric, value, min, max, samples: plain tuples, as 50,000 models cost a second.
Row = tuple[datetime, str, float, float, float, int]
_POINT_KEYS = ("time", "metric", "value", "min", "max", "samples")


@dataclass(frozen=True)
class Found:
    device_id: str
    resolution: Resolution
    start: datetime
    end: datetime
    metrics: tuple[str, ...]
    rows: list[Row]


@dataclass(frozen=True)
class HistoryQuery:
    device_id: str
    metrics: tuple[str, ...]
    start: datetime
    end: datetime
    resolution: Resolution | Literal["auto"]


_PLUS_AS_SPACE = re.compile(r"(\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:?\d{2})$")


def parse_time(field: str, text: str, naive: tzinfo | None) -> datetime:
    """An ISO 8601 time; one without an offset is taken in `naive` (the CLI: WIB) or refused
    (the API: an integrator's naive UTC must not shift by 7 hours unseen)."""
    # An unescaped "+07:00" in a URL's query arrives as " 07:00": take it as meant.
    text = _PLUS_AS_SPACE.sub(r"\1+\2", text.strip())
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise Invalid(
            [_problem(field, f"{text!r}: expected an ISO 8601 time, e.g. 2026-12-01T08:00+07:00")]
        ) from None
    if value.tzinfo is None:
        if naive is None:
            raise Invalid(
                [
                    _problem(
                        field,
                        f"{text!r} has no offset: expected e.g. {value:%Y-%m-%dT%H:%M}+07:00 (WIB)"
                        f" or {value:%Y-%m-%dT%H:%M}Z (UTC)",
                    )
                ]
            )
        value = value.replace(tzinfo=naive)
    try:
        inside = EARLIEST <= value.astimezone(UTC) < LATEST
    except OverflowError:  # e.g. 0001-01-01T00:00+07:00 is before datetime's year 1 in UTC
        inside = False
    if not inside:
        raise Invalid(
            [
                _problem(
                    field,
                    f"{text!r}: expected a time from {EARLIEST:%Y-%m-%d} to before "
                    f"{LATEST:%Y-%m-%d} (UTC)",
                )
            ]
        )
    return value


def plan(
    device_id: str,
    metrics: Sequence[str],
    start: str | None,
    end: str | None,
    resolution: str,
    now: datetime,
    naive: tzinfo | None = None,
) -> HistoryQuery:
    """Check a history request; every problem is reported, not just the first."""
    problems: list[Problem] = []
    wanted = tuple(dict.fromkeys(m.strip() for m in metrics if m.strip()))
    bad = [m for m in wanted if not METRIC.match(m)]
    if bad:
        problems.append(_problem("metric", f"{bad[0]!r} is not a metric name"))
    if len(wanted) > MAX_METRICS:
        problems.append(_problem("metric", f"{len(wanted)} metrics: at most {MAX_METRICS}"))
    if resolution not in (*RESOLUTIONS, "auto"):
        problems.append(
            _problem("resolution", f"{resolution!r}: expected one of raw, 1m, 1h or auto")
        )
    times: dict[str, datetime] = {}
    for field, text in (("from", start), ("to", end)):
        if text is not None:
            try:
                times[field] = parse_time(field, text, naive)
            except Invalid as exc:
                problems.extend(exc.problems)
    if problems:
        raise Invalid(problems)
    to = times.get("to", now)
    since = times.get("from", to - DEFAULT_RANGE)
    if since >= to:
        raise Invalid([_problem("from", f"{_show(since)} is not before to ({_show(to)})")])
    span = to - since
    if resolution == "auto":
        if span > MAX_RANGE["1h"]:
            raise Invalid([_too_long("1h", span)])
    elif span > MAX_RANGE[resolution]:  # type: ignore[index]
        raise Invalid([_too_long(resolution, span)])  # type: ignore[arg-type]
    return HistoryQuery(device_id, wanted, since, to, resolution)  # type: ignore[arg-type]


async def history(conn: psycopg.AsyncConnection, request: HistoryQuery) -> Found:
    """The readings asked for, oldest first; `auto` takes the finest resolution whose range and
    row limit the answer fits."""
    device = await get_device(conn, request.device_id)
    await _check_metrics(conn, device.device_id, device.device_type, request.metrics)
    span = request.end - request.start
    if request.resolution == "auto":
        tried = [r for r in RESOLUTIONS if MAX_RANGE[r] >= span]
    else:
        tried = [request.resolution]
    for resolution in tried:
        # Counted in the database first: an answer too large is never carried over the wire.
        if await _count(conn, request, resolution, MAX_ROWS + 1) <= MAX_ROWS:
            return Found(
                device.device_id,
                resolution,
                request.start.astimezone(WIB),
                request.end.astimezone(WIB),
                request.metrics,
                await _fetch(conn, request, resolution),
            )
    coarser = [r for r in RESOLUTIONS if RESOLUTIONS.index(r) > RESOLUTIONS.index(tried[-1])]
    instead = f"resolution={coarser[0]}, " if coarser else ""
    raise Invalid(
        [
            _problem(
                "rows",
                f"more than {MAX_ROWS} rows at resolution {tried[-1]}: ask for {instead}"
                "a shorter range (from, to) or fewer metrics",
            )
        ]
    )


def to_json(found: Found) -> bytes:
    return orjson.dumps(
        {
            "device_id": found.device_id,
            "resolution": found.resolution,
            "from": found.start,
            "to": found.end,
            "metrics": list(found.metrics),
            "count": len(found.rows),
            "max_rows": MAX_ROWS,
            "readings": [dict(zip(_POINT_KEYS, row, strict=True)) for row in found.rows],
        }
    )


def to_csv(found: Found) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    device = found.device_id
    writer.writerows((device, m, t.isoformat(), v, lo, hi, n) for t, m, v, lo, hi, n in found.rows)
    return out.getvalue()


def csv_filename(found: Found) -> str:
    span = f"{found.start:%Y%m%dT%H%M}_{found.end:%Y%m%dT%H%M}"
    return f"{found.device_id}_{found.resolution}_{span}.csv"


def _select(request: HistoryQuery, resolution: Resolution) -> tuple[sql.Composed, dict[str, Any]]:
    params: dict[str, Any] = {
        "device": request.device_id,
        "start": request.start,
        "end": request.end,
        "metrics": list(request.metrics),
    }
    only = sql.SQL(" AND metric = ANY(%(metrics)s)" if request.metrics else "")
    if resolution == "raw":
        query = sql.SQL(
            "SELECT time, metric, value, value, value, 1 FROM readings"
            " WHERE device_id = %(device)s AND time >= %(start)s AND time < %(end)s{}"
            " ORDER BY time, metric"
        ).format(only)
    else:
        # A bucket that began before `from` but holds part of the range is included.
        params["start"] = _floor(request.start, BUCKET[resolution])
        query = sql.SQL(
            "SELECT bucket, metric, avg, min, max, samples FROM {}"
            " WHERE device_id = %(device)s AND bucket >= %(start)s AND bucket < %(end)s{}"
            " ORDER BY bucket, metric"
        ).format(sql.Identifier(_TABLE[resolution]), only)
    return query, params


async def _count(
    conn: psycopg.AsyncConnection, request: HistoryQuery, resolution: Resolution, limit: int
) -> int:
    query, params = _select(request, resolution)
    cur = await conn.execute(
        sql.SQL("SELECT count(*) FROM ({} LIMIT %(limit)s) rows").format(query),
        {**params, "limit": limit},
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _fetch(
    conn: psycopg.AsyncConnection, request: HistoryQuery, resolution: Resolution
) -> list[Row]:
    query, params = _select(request, resolution)
    cur = await conn.execute(
        sql.SQL("{} LIMIT %(limit)s").format(query), {**params, "limit": MAX_ROWS}
    )
    return [(t.astimezone(WIB), m, v, lo, hi, n) for t, m, v, lo, hi, n in await cur.fetchall()]


async def _check_metrics(
    conn: psycopg.AsyncConnection, device_id: str, device_type: str, metrics: Sequence[str]
) -> None:
    """A metric neither of the device's type nor ever reported by it is a typo: say which are."""
    if not metrics:
        return
    cur = await conn.execute(
        "SELECT metric FROM device_type_metrics WHERE device_type = %s ORDER BY metric",
        (device_type,),
    )
    known = [m for (m,) in await cur.fetchall()]
    for metric in metrics:
        if metric in known:
            continue
        cur = await conn.execute(
            "SELECT EXISTS (SELECT 1 FROM readings_1h WHERE device_id = %(d)s AND metric = %(m)s)"
            " OR EXISTS (SELECT 1 FROM readings WHERE device_id = %(d)s AND metric = %(m)s)",
            {"d": device_id, "m": metric},
        )
        row = await cur.fetchone()
        if not (row and row[0]):
            raise Invalid(
                [
                    _problem(
                        "metric",
                        f"{metric!r}: device {device_id!r} ({device_type}) has no such metric; "
                        f"expected one of {', '.join(known) or '(none defined)'}",
                    )
                ]
            )


def _too_long(resolution: Resolution, span: timedelta) -> Problem:
    coarser = [r for r in RESOLUTIONS if MAX_RANGE[r] >= span]
    instead = f"resolution={coarser[0]} or " if coarser else ""
    return _problem(
        "range",
        f"from..to spans {_days(span)}; resolution {resolution} answers at most "
        f"{_days(MAX_RANGE[resolution])}: ask for {instead}a shorter range",
    )


def _days(span: timedelta) -> str:
    if span < timedelta(days=1):
        return f"{round(span.total_seconds() / 3600, 1):g} hours"
    return f"{round(span.total_seconds() / 86400, 1):g} days"


def _floor(t: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + (t - epoch) // step * step


def _show(t: datetime) -> str:
    return t.astimezone(WIB).isoformat()


def _problem(field: str, message: str) -> Problem:
    return Problem(row=None, field=field, message=message)
