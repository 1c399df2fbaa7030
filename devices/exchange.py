"""Bulk import and export of devices as CSV, XLSX and GeoJSON.

An import is all or nothing and bounded. Rows are read as a stream (`devices.files`), checked in
batches off the event loop against the registry, and copied into a staging table with the
version of each device they change; when every row is good, one statement creates and updates
the devices (only those still at that version: else the import fails, 412) and writes their
audit entries. The errors of all rows are reported, each with its row (1 = the first data row,
or the first feature) and the file's own line."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import tempfile
from collections.abc import AsyncGenerator, AsyncIterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from devices import registry
from devices.files import (
    BATCH_ROWS,
    COLUMNS,
    XLSX_TYPE,
    CsvReader,
    FileInvalid,
    Record,
    XlsxReader,
    geojson_records,
    to_csv,
    to_geojson,
    to_xlsx,
)
from devices.models import FIELDS, Device, DeviceIn, DevicePatch, Problem

__all__ = [
    "XLSX_TYPE",
    "Imported",
    "TooLarge",
    "csv_source",
    "file_source",
    "geojson_source",
    "import_devices",
    "kind_of",
    "spooled",
    "to_csv",
    "to_geojson",
    "to_xlsx",
    "xlsx_source",
]

Kind = Literal["csv", "xlsx", "geojson"]
Source = AsyncGenerator[list[Record], None]
# The problems an import reports in full; past these it says how many more there are.
MAX_PROBLEMS = 1_000
_READ_CHUNK = 1024 * 1024  # counting
_CHECK_CHUNK = 64 * 1024  # reading to check: a few hundred rows, batches stay near BATCH_ROWS


class UnsupportedType(registry.RegistryError):
    """An import in a Content-Type that is not one of the file kinds."""

    status = 415


class TooLarge(registry.RegistryError):
    """More rows than `devices.import_max_rows`."""

    status = 413


@dataclass(frozen=True)
class Imported:
    created: int
    unchanged: int  # registered devices the file gives as they are
    updated: int
    # Updated devices with a broker client whose status, topic or format changed: the client
    # must follow (enabled only when active, allowed its current topic).
    follow: list[Device]


# ---------------------------------------------------------------------------------------------
# Sources: batches of records from a request body or a file


async def csv_source(file: IO[bytes], max_rows: int) -> Source:
    """The records of a CSV file, read twice: once only counting them (the csv module's speed,
    so that a file past the row limit is refused at once), then to be checked."""
    await asyncio.to_thread(_count_csv, file, max_rows)
    file.seek(0)
    reader = CsvReader()
    pending: list[Record] = []
    while chunk := await asyncio.to_thread(file.read, _CHECK_CHUNK):
        pending.extend(await asyncio.to_thread(reader.feed, chunk))
        while len(pending) >= BATCH_ROWS:
            yield pending[:BATCH_ROWS]
            del pending[:BATCH_ROWS]
    pending.extend(reader.feed(b"", final=True))
    while pending:
        yield pending[:BATCH_ROWS]
        del pending[:BATCH_ROWS]


def _count_csv(file: IO[bytes], max_rows: int) -> None:
    reader, rows = CsvReader(), 0
    while chunk := file.read(_READ_CHUNK):
        rows += len(reader.feed(chunk))
        if rows > max_rows:
            raise too_large(max_rows)
    if rows + len(reader.feed(b"", final=True)) > max_rows:
        raise too_large(max_rows)


def too_large(max_rows: int) -> TooLarge:
    return TooLarge(
        f"the file has more than {max_rows:,} device rows, the most one import takes "
        f"(devices.import_max_rows = {max_rows}): split it into files of at most that many rows"
    )


async def xlsx_source(file: IO[bytes]) -> Source:
    reader = await asyncio.to_thread(XlsxReader, file)
    try:
        while batch := await asyncio.to_thread(reader.take, BATCH_ROWS):
            yield batch
    finally:
        reader.close()


async def geojson_source(data: bytes) -> Source:
    """GeoJSON is one JSON document, parsed whole (its size is bounded by the request body
    limit in the API); its features are then checked in batches like any file's rows."""
    records = await asyncio.to_thread(lambda: list(geojson_records(data)))
    for i in range(0, len(records), BATCH_ROWS):
        yield records[i : i + BATCH_ROWS]


async def spooled(chunks: AsyncIterable[bytes]) -> IO[bytes]:
    """A request body in a temporary file, received before the import takes a database
    connection (the body limit applies as it arrives); XLSX, a zip archive, is read from its
    end."""
    file = tempfile.SpooledTemporaryFile(max_size=1024 * 1024)  # noqa: SIM115 - returned
    async for chunk in chunks:
        file.write(chunk)
    file.seek(0)
    return file


def kind_of(path: Path) -> Kind | None:
    return {".csv": "csv", ".xlsx": "xlsx", ".geojson": "geojson", ".json": "geojson"}.get(  # type: ignore[return-value]
        path.suffix.lower()
    )


async def file_source(path: Path, kind: Kind, max_rows: int) -> Source:
    with path.open("rb") as file:
        if kind == "xlsx":
            async for batch in xlsx_source(file):
                yield batch
        elif kind == "geojson":
            async for batch in geojson_source(file.read()):
                yield batch
        else:
            async for batch in csv_source(file, max_rows):
                yield batch


# ---------------------------------------------------------------------------------------------
# Import

# Every column a file can set, after the id (the export columns) plus metadata.
_STAGED = (*FIELDS[1:], "metadata")
_STAGING = """
CREATE TEMP TABLE device_import (
    row                       integer NOT NULL,
    device_id                 text    NOT NULL PRIMARY KEY,
    is_new                    boolean NOT NULL,
    version                   integer,
    cols                      text[]  NOT NULL,
    name                      text,
    device_type               text,
    kecamatan                 text,
    pillar                    text,
    latitude                  double precision,
    longitude                 double precision,
    address_note              text,
    install_date              date,
    installed_by              text,
    status                    text,
    expected_interval_seconds integer,
    payload_format            text,
    topic                     text,
    metadata                  jsonb
) ON COMMIT DROP
"""
# Columns that are NOT NULL in `devices`: an import that gives null means their default.
_DEFAULTS = {
    "address_note": "''",
    "installed_by": "''",
    "status": "'active'",
    "payload_format": "'json'",
    "topic": "''",
    "metadata": "'{}'::jsonb",
}


def _value(column: str, source: str) -> str:
    default = _DEFAULTS.get(column)
    return f"coalesce({source}.{column}, {default})" if default else f"{source}.{column}"


# Columns of registered devices that the file gives with the value they already have are no
# change: left out, so an unchanged row (an export imported back) is no update and no audit.
_DIFFERS = " ".join(f"WHEN '{c}' THEN d.{c} IS DISTINCT FROM {_value(c, 's')}" for c in _STAGED)
_UNCHANGED = f"""
UPDATE device_import s SET cols = ARRAY(
    SELECT c FROM unnest(s.cols) AS c WHERE CASE c {_DIFFERS} ELSE true END
)
FROM devices d
WHERE NOT s.is_new AND d.device_id = s.device_id AND d.version = s.version
"""  # noqa: S608 - built from constants

# One statement: create the new devices, update the registered ones (only the columns the file
# gives), and audit each change with its before and after, in the file's order.
_APPLY = f"""
WITH before AS (
    SELECT d.device_id, to_jsonb(d) AS data
    FROM devices d JOIN device_import s USING (device_id)
    WHERE NOT s.is_new AND cardinality(s.cols) > 0
), created AS (
    INSERT INTO devices (device_id, {", ".join(_STAGED)})
    SELECT s.device_id, {", ".join(_value(c, "s") for c in _STAGED)}
    FROM device_import s WHERE s.is_new ORDER BY s.row
    RETURNING *
), changed AS (
    UPDATE devices d SET {
    ", ".join(
        f"{c} = CASE WHEN '{c}' = ANY(s.cols) THEN {_value(c, 's')} ELSE d.{c} END" for c in _STAGED
    )
}, version = d.version + 1, updated_at = now()
    FROM device_import s
    WHERE NOT s.is_new AND s.device_id = d.device_id AND cardinality(s.cols) > 0
        AND d.version = s.version
    RETURNING d.*
)
INSERT INTO audit_log (actor, action, entity, entity_id, before, after)
SELECT %(actor)s, a.action, 'device', a.device_id, a.before, a.after
FROM (
    SELECT s.row, 'create' AS action, c.device_id, NULL::jsonb AS before, to_jsonb(c) AS after
    FROM created c JOIN device_import s USING (device_id)
    UNION ALL
    SELECT s.row, 'update', u.device_id, b.data, to_jsonb(u)
    FROM changed u JOIN before b USING (device_id) JOIN device_import s USING (device_id)
) a
ORDER BY a.row
RETURNING action, entity_id, action = 'update' AND after->>'mqtt_username' IS NOT NULL AND (
    before->>'status' IS DISTINCT FROM after->>'status'
    OR before->>'topic' IS DISTINCT FROM after->>'topic'
    OR before->>'payload_format' IS DISTINCT FROM after->>'payload_format'
)
"""  # noqa: S608 - built from constants


async def import_devices(
    conn: psycopg.AsyncConnection, source: Source, actor: str, max_rows: int
) -> Imported:
    """Create new devices and update registered ones, all or nothing."""
    checker = _Checker(await registry.references(conn))
    async with conn.transaction():
        await conn.execute(_STAGING)
        try:
            async with contextlib.aclosing(source):
                created, updated, writes = await _stage_all(conn, source, checker, max_rows)
        except FileInvalid as exc:
            raise registry.Invalid([*checker.problems, exc.problem]) from None
        if checker.problems:
            more = [
                Problem(
                    field="file",
                    message=f"and {checker.more} more problems not listed; fix these first",
                )
            ]
            raise registry.Invalid([*checker.problems, *(more if checker.more else [])])
        await conn.execute(_UNCHANGED)
        cur = await conn.execute(
            "SELECT count(*) FROM device_import WHERE NOT is_new AND cardinality(cols) > 0"
        )
        row = await cur.fetchone()
        writes = row[0] if row else 0
        try:
            cur = await conn.execute(_APPLY, {"actor": actor})
        except psycopg.errors.UniqueViolation:
            raise registry.Exists(
                "a device of the file was registered by someone else during the import: "
                "nothing was imported, run the import again"
            ) from None
        done = await cur.fetchall()
        if sum(1 for action, _, _ in done if action == "update") < writes:
            await _changed_meanwhile(conn)
        await registry.follow_maintenance(conn, [device_id for _, device_id, _ in done], actor)
        to_follow = [device_id for _, device_id, follows in done if follows]
        follow = [await registry.get_device(conn, device_id) for device_id in to_follow]
    return Imported(created, updated - writes, writes, follow)


async def _changed_meanwhile(conn: psycopg.AsyncConnection) -> None:
    """Someone changed devices of the file between their reading and the update: the import
    would overwrite their change unseen (If-Match's 412, for a whole file)."""
    cur = await conn.execute(
        "SELECT s.device_id FROM device_import s JOIN devices d USING (device_id)"
        " WHERE NOT s.is_new AND d.version <> s.version ORDER BY s.row LIMIT 5"
    )
    ids = [device_id for (device_id,) in await cur.fetchall()]
    raise registry.Conflict(
        f"devices of the file changed while it was imported ({', '.join(ids)}): nothing was "
        "imported; run the import again"
    )


async def _stage_all(
    conn: psycopg.AsyncConnection, source: Source, checker: _Checker, max_rows: int
) -> tuple[int, int, int]:
    """Check every row, and copy the good ones into the staging table while none is bad;
    (new devices, registered ones, registered ones with a change). PostgreSQL takes one batch
    while the next is checked."""
    rows = created = updated = writes = 0
    pending = b""  # the last batch checked, to copy
    async for batch in source:
        rows += len(batch)
        if rows > max_rows:
            raise too_large(max_rows)
        ids = [str(r.values.get("device_id", "")) for r in batch]
        existing = await registry.registered(conn, ids)
        checked, copied = await asyncio.gather(
            asyncio.to_thread(checker.check, batch, existing),
            _stage(conn, pending),
            return_exceptions=True,
        )
        for outcome in (checked, copied):
            if isinstance(outcome, BaseException):
                raise outcome
        assert isinstance(checked, _Staged)  # noqa: S101 - for the type checker
        pending = b"" if checker.problems else checked.copy_data
        created += checked.created
        updated += checked.updated
        writes += checked.writes
    await _stage(conn, pending)
    return created, updated, writes


_STAGE = sql.SQL("COPY device_import ({}) FROM STDIN").format(
    sql.SQL(", ").join(
        map(sql.Identifier, ["row", "device_id", "is_new", "version", "cols", *_STAGED])
    )
)


async def _stage(conn: psycopg.AsyncConnection, data: bytes) -> None:
    if data:
        async with conn.cursor() as cur, cur.copy(_STAGE) as copy:
            await copy.write(data)


def _copy_text(values: Sequence[Any]) -> str:
    """One line of COPY's text format."""
    out = []
    for value in values:
        if value is None:
            out.append("\\N")
            continue
        if isinstance(value, bool):
            text = "t" if value else "f"
        elif isinstance(value, list):
            text = "{" + ",".join(value) + "}"  # column names: nothing to quote
        elif isinstance(value, Jsonb):
            text = orjson.dumps(value.obj).decode()
        elif isinstance(value, dt.date):
            text = value.isoformat()
        else:
            text = str(value)
        out.append(
            text.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    return "\t".join(out) + "\n"


@dataclass
class _Staged:
    created: int = 0
    updated: int = 0
    writes: int = 0  # updates that change a column
    copy_data: bytes = b""


_TEXT = frozenset(COLUMNS) - {
    "latitude",
    "longitude",
    "expected_interval_seconds",
    "install_date",
    "allow_outside",
}
_DECIMAL_COMMA = re.compile(r"^[+-]?\d*,\d+$")
_DAY_FIRST = re.compile(r"^(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})$")
_EXPECTED = {
    "device_id": "an id of letters, digits and . _ : @ - (at most 128), e.g. wl-setu-01",
    "name": "a name of 1 to 200 characters",
    "device_type": "a device type id such as water_level (see `pantau devices types`)",
    "kecamatan": "a kecamatan id or name, e.g. setu or Cikarang Pusat",
    "latitude": "a number of degrees between -90 and 90, e.g. -6.35",
    "longitude": "a number of degrees between -180 and 180, e.g. 107.03",
    "address_note": "text of at most 500 characters",
    "install_date": "a date as YYYY-MM-DD, e.g. 2026-11-01",
    "installed_by": "text of at most 200 characters",
    "status": "active, maintenance or retired",
    "expected_interval_seconds": "a whole number of seconds from 1 to 604800",
    "payload_format": "number, json or senml",
    "topic": "an MQTT topic without wildcards (+, #), at most 300 characters",
    "allow_outside": "true or false",
    "metadata": "an object",
}
_COMMA_FORMS = {
    "latitude": " (in a ';'-separated file also -6,35)",
    "longitude": " (in a ';'-separated file also 107,03)",
    "install_date": " (in a ';'-separated file also DD/MM/YYYY)",
}


class _Checker:
    """Checks rows batch by batch, remembering the ids seen and the problems found. Pure
    Python: runs in a worker thread, one batch at a time."""

    def __init__(self, refs: registry.References) -> None:
        self.refs = refs
        self.problems: list[Problem] = []
        self.more = 0
        self.seen: dict[str, tuple[int, int | None]] = {}  # id -> (row, line)

    def _references(self, raw: dict[str, Any]) -> list[Problem]:
        """The row's device type, kecamatan and pillar checked although other fields are
        wrong, so that one pass shows every problem of the row."""
        given = {k: raw[k] for k in ("device_type", "kecamatan", "pillar") if k in raw}
        try:
            probe = DevicePatch.model_validate(given, strict=False)
        except ValidationError:
            return []
        now = dt.datetime.now(dt.UTC)
        stand_in = Device(  # any valid device: only the given fields are looked up
            device_id="probe",
            name="probe",
            device_type=next(iter(self.refs.types)),
            kecamatan=next(iter(self.refs.kecamatan)),
            pillar=next(iter(self.refs.pillars)),
            latitude=None,
            longitude=None,
            address_note="",
            install_date=None,
            installed_by="",
            status="active",
            expected_interval_seconds=60,
            payload_format="json",
            topic="",
            metadata={},
            created_at=now,
            updated_at=now,
            version=1,
            mqtt_username=None,
        )
        return registry.resolve(probe, self.refs, stand_in)[1]

    def _add(self, problems: Sequence[Problem], record: Record) -> None:
        for p in problems:
            p.row, p.line = record.row, record.line
            if len(self.problems) < MAX_PROBLEMS:
                self.problems.append(p)
            else:
                self.more += 1

    def check(self, batch: Sequence[Record], existing: dict[str, Device]) -> _Staged:
        staged = _Staged()
        lines: list[str] = []
        for record in batch:
            if record.problems:
                self._add(record.problems, record)
                continue
            raw = _normalised(record)
            device_id = str(raw.get("device_id", ""))
            first = self.seen.get(device_id)
            if first is not None:
                row, line = first
                where = f"line {line}" if line is not None else f"row {row}"
                self._add(
                    [Problem(field="device_id", message=f"{device_id!r} is also on {where}")],
                    record,
                )
                continue
            self.seen[device_id] = (record.row, record.line)
            current = existing.get(device_id)
            try:
                data: DeviceIn | DevicePatch = (
                    DevicePatch.model_validate(
                        {k: v for k, v in raw.items() if k != "device_id"}, strict=False
                    )
                    if current
                    else DeviceIn.model_validate(raw, strict=False)
                )
            except ValidationError as exc:
                self._add([*_described(exc, record), *self._references(raw)], record)
                continue
            values, found = registry.resolve(data, self.refs, current)
            if found:
                self._add(found, record)
                continue
            if self.problems:
                continue
            values.pop("device_id", None)
            if current is None:
                staged.created += 1
            else:
                staged.updated += 1
                staged.writes += bool(values)
            lines.append(
                _copy_text(
                    [
                        record.row,
                        device_id,
                        current is None,
                        None if current is None else current.version,
                        list(values),
                        *(values.get(c) for c in _STAGED),
                    ]
                )
            )
        staged.copy_data = "".join(lines).encode()
        return staged


def _normalised(record: Record) -> dict[str, Any]:
    """The row's values as the registry's models take them: numbers with a decimal comma,
    day-first dates (a `;`-separated file, as Excel writes it in id-ID), XLSX's typed cells."""
    out: dict[str, Any] = {}
    for name, value in record.values.items():
        if name in _TEXT and isinstance(value, int | float) and not isinstance(value, bool):
            value = str(int(value)) if float(value).is_integer() else str(value)
        elif name in ("latitude", "longitude", "expected_interval_seconds"):
            if isinstance(value, str) and record.decimal_comma and _DECIMAL_COMMA.match(value):
                value = value.replace(",", ".")
            if name == "expected_interval_seconds" and isinstance(value, float):
                value = int(value) if value.is_integer() else value
        elif name == "install_date":
            if isinstance(value, dt.datetime):
                value = value.date()
            elif isinstance(value, str) and record.decimal_comma:
                match = _DAY_FIRST.match(value)
                if match:
                    with contextlib.suppress(ValueError):  # not a date: the model says so
                        value = dt.date(int(match[3]), int(match[2]), int(match[1]))
        out[name] = value
    return out


def _described(exc: ValidationError, record: Record) -> list[Problem]:
    problems = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else "row"
        expected = _EXPECTED.get(field, "")
        if expected and record.decimal_comma:
            expected += _COMMA_FORMS.get(field, "")
        if err["type"] == "missing":
            message = f"a new device needs it; expected {expected}"
        elif err["type"] == "extra_forbidden":
            message = f"not a field of a device; expected some of {', '.join(COLUMNS)}"
        else:
            message = f"{err['input']!r}: {err['msg']}" + (
                f"; expected {expected}" if expected else ""
            )
        problems.append(Problem(field=field, message=message))
    return problems
