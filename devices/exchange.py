"""Bulk import and export of devices as CSV and GeoJSON.

Import is all or nothing: every row is checked first, and the errors of all rows are reported
with their row numbers (1 = the first data row, or the first feature)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

import orjson
import psycopg
from pydantic import ValidationError

from devices import registry
from devices.models import FIELDS, Device, DeviceIn, DevicePatch, Problem


def parse_csv(text: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        raise registry.Invalid([Problem(row=None, field="file", message="the CSV is empty")])
    unknown = [f for f in reader.fieldnames if f not in (*FIELDS, "allow_outside")]
    if unknown:
        raise registry.Invalid(
            [
                Problem(
                    row=None,
                    field="header",
                    message=f"unknown columns {unknown}; expected some of {', '.join(FIELDS)}",
                )
            ]
        )
    rows = []
    for number, record in enumerate(reader, start=1):
        rows.append((number, {k: v for k, v in record.items() if k and v not in (None, "")}))
    return rows


def parse_geojson(data: bytes) -> list[tuple[int, dict[str, Any]]]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise registry.Invalid(
            [Problem(row=None, field="file", message=f"not JSON: {exc}")]
        ) from None
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise registry.Invalid(
            [Problem(row=None, field="type", message="expected a GeoJSON FeatureCollection")]
        )
    rows = []
    for number, feature in enumerate(doc.get("features") or [], start=1):
        props = dict((feature or {}).get("properties") or {})
        geometry = (feature or {}).get("geometry")
        if geometry:
            coords = geometry.get("coordinates") if geometry.get("type") == "Point" else None
            if not (isinstance(coords, list) and len(coords) >= 2):
                rows.append((number, {**props, "__geometry_error__": True}))
                continue
            props["longitude"], props["latitude"] = coords[0], coords[1]
        rows.append((number, props))
    return rows


async def import_rows(
    conn: psycopg.AsyncConnection, rows: Sequence[tuple[int, dict[str, Any]]], actor: str
) -> tuple[list[Device], list[Device]]:
    """Create new devices and update registered ones, all or nothing; (created, updated)."""
    refs = await registry.references(conn)
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    plans: list[tuple[str, DeviceIn | DevicePatch, Device | None]] = []
    existing = {
        d.device_id: d for d in await registry.list_devices(conn, registry.Filters(limit=1_000_000))
    }
    for number, raw in rows:
        if raw.pop("__geometry_error__", False):
            problems.append(
                Problem(
                    row=number,
                    field="geometry",
                    message="expected a Point with [longitude, latitude]",
                )
            )
            continue
        device_id = str(raw.get("device_id", ""))
        if device_id in seen:
            problems.append(
                Problem(
                    row=number,
                    field="device_id",
                    message=f"{device_id!r} is also on row {seen[device_id]}",
                )
            )
            continue
        seen[device_id] = number
        current = existing.get(device_id)
        try:
            data: DeviceIn | DevicePatch = (
                DevicePatch.model_validate({k: v for k, v in raw.items() if k != "device_id"})
                if current
                else DeviceIn.model_validate(raw)
            )
        except ValidationError as exc:
            for err in exc.errors():
                field = ".".join(str(p) for p in err["loc"]) or "row"
                problems.append(Problem(row=number, field=field, message=err["msg"]))
            continue
        _, found = registry.resolve(data, refs, current, row=number)
        problems.extend(found)
        plans.append((device_id, data, current))
    if problems:
        raise registry.Invalid(problems)
    created: list[Device] = []
    updated: list[Device] = []
    async with conn.transaction():
        for device_id, data, current in plans:
            if current is None:
                assert isinstance(data, DeviceIn)  # noqa: S101 - planned above
                created.append(await registry.create_device(conn, data, actor, refs))
            else:
                assert isinstance(data, DevicePatch)  # noqa: S101
                updated.append(
                    await registry.update_device(conn, device_id, data, None, actor, refs)
                )
    return created, updated


def to_csv(devices: Sequence[Device]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for device in devices:
        row = device.model_dump(mode="json")
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in FIELDS})
    return out.getvalue()


def to_geojson(devices: Sequence[Device]) -> bytes:
    features = []
    for device in devices:
        props = device.model_dump(mode="json", include=set(FIELDS) - {"latitude", "longitude"})
        geometry = (
            {"type": "Point", "coordinates": [device.longitude, device.latitude]}
            if device.latitude is not None and device.longitude is not None
            else None
        )
        features.append({"type": "Feature", "geometry": geometry, "properties": props})
    return orjson.dumps({"type": "FeatureCollection", "features": features})
