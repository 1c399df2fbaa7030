"""The device registry's data: devices with versions (for If-Match), their reference data, the
audit log of every change. Used by the HTTP API and the CLI alike."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from devices.models import (
    AuditEntry,
    Device,
    DeviceIn,
    DevicePatch,
    DeviceType,
    KecamatanOut,
    MetricSpec,
    PendingDevice,
    PillarOut,
    Problem,
    Reading,
)
from pantau.cliapp import WIB
from pantau.errors import PantauError
from pantau.mappings import default_mappings
from pantau.regency import LATITUDE, LONGITUDE, inside

_COLUMNS = (
    "d.device_id, d.name, d.device_type, d.kecamatan, d.pillar, d.latitude, d.longitude, "
    "d.address_note, d.install_date, d.installed_by, d.status, d.expected_interval_seconds, "
    "d.payload_format, d.topic, d.metadata, d.created_at, d.updated_at, d.version, "
    "d.mqtt_username, s.last_reading_at"
)
_SELECT = f"SELECT {_COLUMNS} FROM devices d LEFT JOIN device_last_seen s USING (device_id)"  # noqa: S608 - constants
# The topic a device publishes on, per payload format: the default mapping's pattern for that
# format, without the metric level of the bare-number one.
_TOPIC: dict[str, str] = {m.format: m.topic.removesuffix("/{metric}") for m in default_mappings()}


class RegistryError(PantauError):
    status = 400


class Invalid(RegistryError):
    """The request names things that do not exist or values out of range."""

    status = 422

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(_describe(p) for p in self.problems))


class NotFound(RegistryError):
    status = 404


class Exists(RegistryError):
    status = 409


class AlreadyRetired(Exists):
    """Retiring a device that is retired already: nothing changes, and the caller is told."""


class PreconditionRequired(RegistryError):
    """A change without If-Match: it could overwrite someone else's edit unseen."""

    status = 428


class Conflict(RegistryError):
    """Someone else changed the device since the caller read it."""

    status = 412


def _describe(p: Problem) -> str:
    where = f"row {p.row}: " if p.row is not None else ""
    return f"{where}{p.field}: {p.message}"


def publish_topic(payload_format: str, kecamatan: str, device_id: str) -> str:
    """Where a device of this format publishes, under the default mappings. For the bare-number
    format the metric is the last level: `<topic>/<metric>`."""
    return _TOPIC[payload_format].format(kecamatan=kecamatan, device=device_id)


@dataclass(frozen=True)
class References:
    types: dict[str, DeviceType]
    kecamatan: dict[str, KecamatanOut]  # by id
    kecamatan_by_name: dict[str, str]  # lower-case name -> id
    pillars: set[str]


async def references(conn: psycopg.AsyncConnection) -> References:
    types = {t.id: t for t in await device_types(conn)}
    kec = {k.id: k for k in await kecamatan(conn)}
    return References(
        types,
        kec,
        {k.name.lower(): k.id for k in kec.values()},
        {p.id for p in await pillars(conn)},
    )


async def device_types(conn: psycopg.AsyncConnection) -> list[DeviceType]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute("SELECT * FROM device_type_metrics ORDER BY device_type, metric")
    metrics: dict[str, list[MetricSpec]] = {}
    for row in await cur.fetchall():
        metrics.setdefault(row.pop("device_type"), []).append(MetricSpec(**row))
    await cur.execute("SELECT * FROM device_types ORDER BY id")
    return [DeviceType(**row, metrics=metrics.get(row["id"], [])) for row in await cur.fetchall()]


async def kecamatan(conn: psycopg.AsyncConnection) -> list[KecamatanOut]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute("SELECT id, name, latitude, longitude FROM kecamatan ORDER BY name")
    return [KecamatanOut(**row) for row in await cur.fetchall()]


async def pillars(conn: psycopg.AsyncConnection) -> list[PillarOut]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute("SELECT id, name, name_id FROM pillars ORDER BY id")
    return [PillarOut(**row) for row in await cur.fetchall()]


@dataclass(frozen=True)
class Filters:
    kecamatan: str | None = None
    device_type: str | None = None
    status: str | None = None
    pillar: str | None = None
    text: str | None = None
    limit: int = 500
    offset: int = 0


STATUSES = ("active", "maintenance", "retired")


def resolve_filters(f: Filters, refs: References) -> Filters:
    """The filters with a kecamatan name turned into its id, as `devices add` takes them; an
    unknown value is an error listing the choices (never a silent empty list)."""
    problems: list[Problem] = []
    kecamatan_id = f.kecamatan
    if f.kecamatan:
        kecamatan_id = (
            f.kecamatan
            if f.kecamatan in refs.kecamatan
            else refs.kecamatan_by_name.get(f.kecamatan.strip().lower())
        )
        if kecamatan_id is None:
            problems.append(
                Problem(
                    field="kecamatan",
                    message=f"{f.kecamatan!r} is not a kecamatan of the regency; expected an id "
                    f"or a name: {', '.join(sorted(refs.kecamatan))}",
                )
            )
    for field, value, choices, what in (
        ("device_type", f.device_type, refs.types, "a device type"),
        ("status", f.status, STATUSES, "a status"),
        ("pillar", f.pillar, refs.pillars, "a pillar"),
    ):
        if value and value not in choices:
            expected = ", ".join(sorted(choices))
            problems.append(
                Problem(field=field, message=f"{value!r} is not {what}; expected one of {expected}")
            )
    if problems:
        raise Invalid(problems)
    return replace(f, kecamatan=kecamatan_id)


async def list_devices(conn: psycopg.AsyncConnection, f: Filters = Filters()) -> list[Device]:
    if f.kecamatan or f.device_type or f.status or f.pillar:
        f = resolve_filters(f, await references(conn))
    where: list[sql.Composable] = []
    params: dict[str, Any] = {"limit": f.limit, "offset": f.offset}
    for column, value in (
        ("kecamatan", f.kecamatan),
        ("device_type", f.device_type),
        ("status", f.status),
        ("pillar", f.pillar),
    ):
        if value:
            where.append(
                sql.SQL("d.{} = {}").format(sql.Identifier(column), sql.Placeholder(column))
            )
            params[column] = value
    if f.text:
        where.append(
            sql.SQL(
                "(d.device_id ILIKE %(text)s OR d.name ILIKE %(text)s"
                " OR d.address_note ILIKE %(text)s)"
            )
        )
        params["text"] = f"%{f.text}%"
    query: sql.Composable = sql.SQL(_SELECT)
    if where:
        query += sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where)
    query += sql.SQL(" ORDER BY d.device_id LIMIT %(limit)s OFFSET %(offset)s")
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(query, params)
    return [Device(**row) for row in await cur.fetchall()]


async def get_device(conn: psycopg.AsyncConnection, device_id: str) -> Device:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(sql.SQL(_SELECT + " WHERE d.device_id = %s"), (device_id,))
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no device {device_id!r}")
    return Device(**row)


# Ids that /api/v1/devices/{device_id} could never reach: the paths beside it.
RESERVED_IDS = frozenset({"export", "import", "pending"})
_REQUIRED = ("name", "device_type", "kecamatan", "status", "payload_format")


def resolve(
    data: DeviceIn | DevicePatch, refs: References, current: Device | None, row: int | None = None
) -> tuple[dict[str, Any], list[Problem]]:
    """The column values a create or a patch sets, defaults filled in from the device type, and
    every problem found (not just the first)."""
    given = data.model_dump(exclude_unset=True, exclude={"allow_outside"})
    values = dict(given)
    problems: list[Problem] = []

    def problem(field: str, message: str) -> None:
        problems.append(Problem(row=row, field=field, message=message))

    for field in _REQUIRED:
        if field in given and given[field] is None:
            problem(field, "cannot be emptied")
    for field in ("address_note", "installed_by"):
        if field in given and given[field] is None:
            problem(field, 'cannot be null; expected text ("" clears it)')
    if given.get("device_type") is not None and given["device_type"] not in refs.types:
        problem(
            "device_type",
            f"{given['device_type']!r} is not a device type; expected one "
            f"of {', '.join(sorted(refs.types))}",
        )
    if given.get("kecamatan") is not None:
        name = given["kecamatan"]
        found = name if name in refs.kecamatan else refs.kecamatan_by_name.get(name.lower())
        if found is None:
            problem(
                "kecamatan",
                f"{name!r} is not a kecamatan of the regency; expected an id "
                "or a name such as 'setu' or 'Cikarang Pusat'",
            )
        values["kecamatan"] = found
    if given.get("pillar") is not None and given["pillar"] not in refs.pillars:
        problem(
            "pillar",
            f"{given['pillar']!r} is not a pillar; expected one of "
            f"{', '.join(sorted(refs.pillars))}",
        )
    merged = {**(current.model_dump() if current else {}), **values}
    lat, lon = merged.get("latitude"), merged.get("longitude")
    if ("latitude" in given) != ("longitude" in given):  # a position is changed as a pair
        problem(
            "latitude" if "latitude" not in given else "longitude",
            "give both latitude and longitude: a position changes as a pair",
        )
    elif (lat is None) != (lon is None):
        problem(
            "latitude" if lat is None else "longitude",
            "give both latitude and longitude, or neither",
        )
    elif (
        lat is not None
        and lon is not None
        and not inside(lat, lon)
        and not data.allow_outside
        and ("latitude" in given or "longitude" in given)
    ):
        problem(
            "latitude",
            f"({lat}, {lon}) is outside Kabupaten Bekasi (latitude "
            f"{LATITUDE[0]}..{LATITUDE[1]}, longitude {LONGITUDE[0]}..{LONGITUDE[1]}): check "
            "the position, or set allow_outside for an edge case",
        )
    if problems:
        return values, problems

    device_type = refs.types[merged["device_type"]]
    if merged.get("pillar") is None:
        values["pillar"] = device_type.pillar
    if current is None and "expected_interval_seconds" not in given:
        values["expected_interval_seconds"] = device_type.expected_interval_seconds
    # An explicit null: the outage detector learns the interval from the device's reporting.
    fmt = merged.get("payload_format") or "json"
    if current is None:
        values["payload_format"] = fmt
    default_topic = publish_topic(fmt, merged["kecamatan"], merged["device_id"])
    was_default = current is not None and current.topic == publish_topic(
        current.payload_format, current.kecamatan, current.device_id
    )
    follows = not merged.get("topic") or ("topic" not in given and was_default)
    if follows and (current is None or current.topic != default_topic):
        values["topic"] = default_topic  # follows the kecamatan and format unless set by hand
    if "metadata" in values:
        values["metadata"] = Jsonb(values["metadata"] or {})
    return values, problems


async def create_device(
    conn: psycopg.AsyncConnection, data: DeviceIn, actor: str, refs: References | None = None
) -> Device:
    refs = refs or await references(conn)
    values, problems = resolve(data, refs, None)
    if problems:
        raise Invalid(problems)
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT status FROM devices WHERE device_id = %s", (data.device_id,)
        )
        if await cur.fetchone():
            raise Exists(f"device {data.device_id!r} is already registered")
        if data.device_id in RESERVED_IDS:
            raise Exists(
                f"device id {data.device_id!r} is taken by the API's own path "
                f"/api/v1/devices/{data.device_id}; choose another id"
            )
        columns = list(values)
        await conn.execute(
            sql.SQL("INSERT INTO devices ({}) VALUES ({})").format(
                sql.SQL(", ").join(map(sql.Identifier, columns)),
                sql.SQL(", ").join(sql.Placeholder(c) for c in columns),
            ),
            values,
        )
        device = await get_device(conn, data.device_id)
        await audit(conn, actor, "create", device.device_id, None, device)
        if device.status == "maintenance":
            await follow_maintenance(conn, [device.device_id], actor)
    return device


async def update_device(
    conn: psycopg.AsyncConnection,
    device_id: str,
    patch: DevicePatch,
    expected_version: int | None,
    actor: str,
    refs: References | None = None,
) -> Device:
    """Apply `patch` if the device is still at `expected_version` (412 otherwise)."""
    refs = refs or await references(conn)
    async with conn.transaction():
        current = await _locked(conn, device_id)
        # A bad request is 422 whatever the version: the caller learns what to fix first.
        values, problems = resolve(patch, refs, current)
        if problems:
            raise Invalid(problems)
        if expected_version is not None and current.version != expected_version:
            raise Conflict(
                f"device {device_id!r} changed since you read it (version {expected_version}, "
                f"now {current.version}): read it again and reapply your change"
            )
        if not values:
            return current
        await conn.execute(
            sql.SQL(
                "UPDATE devices SET {}, version = version + 1, updated_at = now()"
                " WHERE device_id = %(device_id)s"
            ).format(
                sql.SQL(", ").join(
                    sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder(c)) for c in values
                )
            ),
            {**values, "device_id": device_id},
        )
        device = await get_device(conn, device_id)
        await audit(conn, actor, "update", device_id, current, device)
        if device.status != current.status:
            await follow_maintenance(conn, [device_id], actor)
    return device


async def retire_device(
    conn: psycopg.AsyncConnection, device_id: str, expected_version: int | None, actor: str
) -> Device:
    """Retire a device; one retired already is refused (409) with when it was retired, so a
    second retire neither bumps the version nor writes an audit entry."""
    async with conn.transaction():
        current = await _locked(conn, device_id)
        if current.status == "retired":
            raise AlreadyRetired(
                f"device {device_id!r} is already retired (since "
                f"{current.updated_at.astimezone(WIB):%Y-%m-%d %H:%M} WIB): nothing was changed"
            )
        return await update_device(
            conn, device_id, DevicePatch(status="retired"), expected_version, actor
        )


# The window a device's `maintenance` status keeps open: opened when the status is set, ended
# when the device is active again or retired (planned windows are left as they were planned).
STATUS_WINDOW_REASON = "status maintenance"
_FOLLOW_MAINTENANCE = """
WITH ended AS (
    UPDATE maintenance_windows w SET ends_at = now()
    FROM devices d
    WHERE w.device_id = d.device_id AND d.device_id = ANY(%(ids)s) AND d.status <> 'maintenance'
      AND w.ends_at IS NULL AND w.reason = %(reason)s AND w.starts_at < now()
    RETURNING w.id
), dropped AS (  -- opened in this very transaction: a window of no length is no window
    DELETE FROM maintenance_windows w
    USING devices d
    WHERE w.device_id = d.device_id AND d.device_id = ANY(%(ids)s) AND d.status <> 'maintenance'
      AND w.ends_at IS NULL AND w.reason = %(reason)s AND w.starts_at >= now()
    RETURNING w.id
)
INSERT INTO maintenance_windows (device_id, starts_at, reason, created_by)
SELECT d.device_id, now(), %(reason)s, %(actor)s
FROM devices d
WHERE d.device_id = ANY(%(ids)s) AND d.status = 'maintenance' AND NOT EXISTS (
    SELECT 1 FROM maintenance_windows w
    WHERE w.device_id = d.device_id AND w.ends_at IS NULL AND w.reason = %(reason)s
)
"""


async def follow_maintenance(
    conn: psycopg.AsyncConnection, device_ids: Sequence[str], actor: str
) -> None:
    """Open a window for each of `device_ids` now in `maintenance`, end the status window of
    each that is not (active again, or retired). Run in the transaction that changed them."""
    await conn.execute(
        _FOLLOW_MAINTENANCE,
        {"ids": list(device_ids), "reason": STATUS_WINDOW_REASON, "actor": actor},
    )


def credentials_warning(device: Device) -> str | None:
    """Credentials of a device in maintenance are issued (the technician can set up a repaired
    or replaced unit before it goes back into service) but its broker client stays disabled."""
    if device.status != "maintenance":
        return None
    return (
        f"device {device.device_id!r} is in maintenance: these credentials work once it is "
        f"active again (pantau devices edit {device.device_id} --status active)"
    )


async def _locked(conn: psycopg.AsyncConnection, device_id: str) -> Device:
    cur = await conn.execute("SELECT 1 FROM devices WHERE device_id = %s FOR UPDATE", (device_id,))
    if await cur.fetchone() is None:
        raise NotFound(f"no device {device_id!r}")
    return await get_device(conn, device_id)


async def audit(
    conn: psycopg.AsyncConnection,
    actor: str,
    action: str,
    device_id: str,
    before: Device | None,
    after: Device | None,
) -> None:
    def data(d: Device | None) -> Jsonb | None:
        return Jsonb(d.model_dump(mode="json", exclude={"last_reading_at"})) if d else None

    await conn.execute(
        "INSERT INTO audit_log (actor, action, entity, entity_id, before, after)"
        " VALUES (%s, %s, 'device', %s, %s, %s)",
        (actor, action, device_id, data(before), data(after)),
    )


async def audit_entries(
    conn: psycopg.AsyncConnection,
    entity: str | None = None,
    entity_id: str | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT * FROM audit_log WHERE (%(e)s::text IS NULL OR entity = %(e)s)"
        " AND (%(i)s::text IS NULL OR entity_id = %(i)s) ORDER BY id DESC LIMIT %(l)s",
        {"e": entity, "i": entity_id, "l": limit},
    )
    return [AuditEntry(**row) for row in await cur.fetchall()]


async def pending(conn: psycopg.AsyncConnection) -> list[PendingDevice]:
    """Devices that report but are not registered, newest first (at most 1000), each with the
    metrics it sent and the `pantau devices add` line that adopts it."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT p.*, ARRAY(SELECT DISTINCT metric FROM readings r WHERE r.device_id = p.device_id"
        "  AND r.time > p.last_reading_at - interval '1 hour' ORDER BY 1) AS metrics"
        " FROM pending_devices p ORDER BY last_received_at DESC LIMIT 1000"
    )
    rows = await cur.fetchall()
    if not rows:
        return []
    refs = await references(conn)
    found = []
    for row in rows:
        device_type = _type_of(row["metrics"], refs)
        kecamatan_id = _kecamatan_in(row["device_id"], refs)
        found.append(
            PendingDevice(
                **row,
                device_type=device_type,
                kecamatan=kecamatan_id,
                adopt=adopt_command(row["device_id"], device_type, kecamatan_id),
            )
        )
    return found


def adopt_command(device_id: str, device_type: str | None, kecamatan_id: str | None) -> str:
    """The `pantau devices add` line that registers a pending device; what could not be guessed
    is left in capitals for the technician to fill in."""
    return (
        f"pantau devices add --id {shlex.quote(device_id)} --name {shlex.quote(device_id)}"
        f" --type {device_type or 'TYPE'} --kecamatan {kecamatan_id or 'KECAMATAN'}"
    )


def _type_of(metrics: Sequence[str], refs: References) -> str | None:
    """The one device type whose metrics include every metric the device sent, if exactly one."""
    sent = set(metrics)
    fits = [t.id for t in refs.types.values() if sent and sent <= {m.metric for m in t.metrics}]
    return fits[0] if len(fits) == 1 else None


def _kecamatan_in(device_id: str, refs: References) -> str | None:
    """A kecamatan id that is a part of the device id (`wl-cikarang-pusat-01`), the longest."""
    padded = f"-{device_id.lower()}-"
    found = [k for k in refs.kecamatan if f"-{k}-" in padded]
    return max(found, key=len) if found else None


async def latest_readings(
    conn: psycopg.AsyncConnection, device_id: str, since_minutes: int = 1440
) -> list[Reading]:
    """The newest value of each metric the device reported in the last day."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT DISTINCT ON (metric) metric, time, value FROM readings"
        " WHERE device_id = %s AND time > now() - make_interval(mins => %s)"
        " ORDER BY metric, time DESC",
        (device_id, since_minutes),
    )
    return [Reading(**row) for row in await cur.fetchall()]


async def registered(conn: psycopg.AsyncConnection, ids: Sequence[str]) -> dict[str, Device]:
    """The registered devices among `ids` (an import's batch). Built without validation: the
    rows come from the table the models describe."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(sql.SQL(_SELECT + " WHERE d.device_id = ANY(%s)"), (list(ids),))
    return {row["device_id"]: Device.model_construct(**row) for row in await cur.fetchall()}
