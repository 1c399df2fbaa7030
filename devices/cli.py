"""`pantau devices ...`: the registry from a terminal, with the same checks as the API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import psycopg
import typer

from devices import exchange, readings, registry
from devices.credentials import issuer_for, renew
from devices.models import Device, DeviceIn, DevicePatch, Problem, Registered
from devices.setup import registration, terminal_qr
from pantau import cliapp, db, logs
from pantau.cliapp import WIB
from pantau.errors import ConfigError
from pantau.regency import inside
from pantau.settings import Settings

app = typer.Typer(
    help="The device registry: register, list, edit, retire, import, export.", no_args_is_help=True
)
T = TypeVar("T")


def _settings() -> Settings:
    """The settings, with logging that keeps a terminal's output clean: a command's own output
    goes to stdout, and only warnings and errors are logged (to stderr)."""
    settings = cliapp.settings(configure_logs=False)
    level = max(logging.WARNING, logging.getLevelName(settings.log.level))
    logs.configure(logging.getLevelName(level), settings.log.format)
    return settings


def _run(work: Callable[[psycopg.AsyncConnection], Awaitable[T]]) -> T:
    settings = _settings()

    async def go() -> T:
        async with await db.connect(settings.database, autocommit=True) as conn:
            return await work(conn)

    try:
        return asyncio.run(go())
    except registry.Invalid as exc:
        raise _InvalidOptions(_problems(exc), exc) from None
    except registry.RegistryError as exc:
        raise ConfigError(str(exc)) from None


class _InvalidOptions(ConfigError):
    """Problems with what the user typed, each under the option they typed."""

    def __init__(self, message: str, invalid: registry.Invalid) -> None:
        super().__init__(message)
        self.invalid = invalid


# The option a user typed for each field, where it is not `--field-name`.
_OPTIONS = {
    "device_id": "--id",
    "device_type": "--type",
    "latitude": "--lat",
    "longitude": "--lon",
    "address_note": "--address",
    "payload_format": "--format",
    "expected_interval_seconds": "--interval",
    "text": "--search",
}


def _option(field: str) -> str:
    return _OPTIONS.get(field, "--" + field.replace("_", "-"))


def _problems(exc: registry.Invalid, options: dict[str, str] | None = None) -> str:
    """The problems of a command's options, each under the option the user typed (an import's,
    with their rows, as they are)."""
    if any(p.row is not None for p in exc.problems):
        return str(exc)
    return "; ".join(
        f"{(options or {}).get(p.field) or _option(p.field)}: "
        + p.message.replace("set allow_outside", "give --allow-outside")
        for p in exc.problems
    )


def _check_position(latitude: float | None, longitude: float | None) -> None:
    """A point outside the regency that lies inside once swapped: the usual typing slip."""
    if latitude is None or longitude is None:
        return
    if not inside(latitude, longitude) and inside(longitude, latitude):
        raise ConfigError(
            f"--lat {latitude:g} --lon {longitude:g} lies outside Kabupaten Bekasi, but swapped "
            f"it lies inside: latitude and longitude swapped? expected --lat {longitude:g} "
            f"--lon {latitude:g}"
        )


def _line(d: Device) -> str:
    seen = d.last_reading_at.astimezone(WIB).strftime("%d-%m %H:%M") if d.last_reading_at else "-"
    return (
        f"{d.device_id:<24} {d.device_type:<16} {d.kecamatan:<18} {d.status:<11} {seen:<11} "
        + d.name
    )


def _show(d: Device) -> None:
    for key, value in d.model_dump().items():
        if isinstance(value, datetime):
            value = f"{value.astimezone(WIB):%Y-%m-%d %H:%M:%S} WIB"
        if value not in (None, "", {}):
            typer.echo(f"{key:>26}: {value}")


def _credentials(registered: Registered, qr: bool) -> None:
    creds = registered.credentials
    if creds is None:
        typer.echo("no MQTT credentials: this Pantau does not manage them (mqtt.dynsec is off)")
    else:
        typer.echo(f"MQTT password (shown this once): {creds.password}")
    typer.echo("configuration for the device:")
    typer.echo(registered.setup.snippet, nl=False)
    if qr:
        typer.echo(terminal_qr(registered.setup.snippet), nl=False)
    if registered.warning:
        typer.echo(f"warning: {registered.warning}", err=True)


Opt = typer.Option


@app.command("add")
def add(
    device_id: Annotated[str, Opt("--id", help="e.g. wl-setu-01")],
    name: Annotated[str, Opt(help="what a technician calls it on site")],
    device_type: Annotated[
        str, Opt("--type", help="e.g. water_level (see `pantau devices types`)")
    ],
    kecamatan: Annotated[str, Opt(help="id or name, e.g. setu or 'Cikarang Pusat'")],
    latitude: Annotated[float | None, Opt("--lat")] = None,
    longitude: Annotated[float | None, Opt("--lon")] = None,
    address_note: Annotated[str | None, Opt("--address")] = None,
    installed_by: Annotated[str | None, Opt()] = None,
    install_date: Annotated[datetime | None, Opt(formats=["%Y-%m-%d"])] = None,
    payload_format: Annotated[str | None, Opt("--format", help="number, json or senml")] = None,
    pillar: Annotated[str | None, Opt()] = None,
    allow_outside: Annotated[bool, Opt(help="accept a position outside the regency")] = False,
    qr: Annotated[bool, Opt(help="also print the configuration as a QR code")] = False,
) -> None:
    """Register a device (and, with mqtt.dynsec, its MQTT credentials, shown once)."""
    _check_position(latitude, longitude)
    data = _validated(
        DeviceIn,
        device_id=device_id,
        name=name,
        device_type=device_type,
        kecamatan=kecamatan,
        latitude=latitude,
        longitude=longitude,
        address_note=address_note,
        installed_by=installed_by,
        install_date=install_date.date() if install_date else None,
        payload_format=payload_format,
        pillar=pillar,
        allow_outside=allow_outside,
    )
    settings = _settings()

    async def work(conn: psycopg.AsyncConnection) -> Registered:
        async with conn.transaction():  # no credentials, no device
            device = await registry.create_device(conn, data, cliapp.actor())
            creds = await issuer_for(settings.mqtt).issue(conn, device, cliapp.actor())
            device = await registry.get_device(conn, device.device_id)
            registered = await registration(conn, device, creds, settings.mqtt)
            if creds is not None:
                registered.warning = registry.credentials_warning(device)
            return registered

    registered = _run(work)
    device = registered.device
    typer.echo(f"registered {device.device_id}; it publishes on {device.topic}")
    _show(device)
    _credentials(registered, qr)


@app.command("list")
def list_(
    kecamatan: Annotated[str | None, Opt(help="id or name, e.g. setu or 'Cikarang Pusat'")] = None,
    device_type: Annotated[str | None, Opt("--type", help="e.g. water_level")] = None,
    status: Annotated[str | None, Opt(help="active, maintenance or retired")] = None,
    pillar: Annotated[str | None, Opt()] = None,
    text: Annotated[str | None, Opt("--search", "-s", help="text in id, name or address")] = None,
) -> None:
    """List devices (last reading in WIB). Filters take what `devices add` takes."""
    filters = registry.Filters(kecamatan, device_type, status, pillar, text, limit=100_000)
    devices = _run(lambda conn: registry.list_devices(conn, filters))
    typer.echo(
        f"{'device':<24} {'type':<16} {'kecamatan':<18} {'status':<11} {'last (WIB)':<11} name"
    )
    for d in devices:
        typer.echo(_line(d))
    typer.echo(f"{len(devices)} devices")


@app.command("show")
def show(device_id: Annotated[str, typer.Argument()]) -> None:
    """One device, with its newest readings."""

    async def work(conn: psycopg.AsyncConnection) -> tuple[Device, list[Any]]:
        return await registry.get_device(conn, device_id), await registry.latest_readings(
            conn, device_id
        )

    device, latest = _run(work)  # not `readings`: that is the history module
    _show(device)
    for r in latest:
        typer.echo(
            f"{'reading':>26}: {r.metric} = {r.value:g} "
            f"at {r.time.astimezone(WIB):%Y-%m-%d %H:%M:%S} WIB"
        )


@app.command("pending")
def pending() -> None:
    """Devices that report but are not registered, each with the command that adopts it."""
    found = _run(registry.pending)
    if not found:
        typer.echo("no unregistered device has reported")
        return
    typer.echo(f"{'device':<24} {'first seen (WIB)':<17} {'last (WIB)':<17} metrics")
    for p in found:
        typer.echo(
            f"{p.device_id:<24} {p.first_seen_at.astimezone(WIB):%Y-%m-%d %H:%M}  "
            f"{p.last_received_at.astimezone(WIB):%Y-%m-%d %H:%M}  {', '.join(p.metrics) or '-'}"
        )
        typer.echo(f"    adopt: {p.adopt}")
    typer.echo(
        f"{len(found)} unregistered devices; adopt one by registering it with the line shown "
        "(fill in what is in capitals; add --lat/--lon)"
    )


@app.command("readings")
def readings_(
    device_id: Annotated[str, typer.Argument()],
    metric: Annotated[
        list[str] | None, Opt("--metric", "-m", help="repeat for several; default: all")
    ] = None,
    start: Annotated[
        str | None, Opt("--from", help="ISO 8601; without an offset, WIB (e.g. 2026-12-01)")
    ] = None,
    end: Annotated[str | None, Opt("--to", help="default: now")] = None,
    resolution: Annotated[str, Opt(help="raw, 1m, 1h or auto (by range)")] = "auto",
    as_csv: Annotated[bool, Opt("--csv", help="CSV (as the API's) instead of a table")] = False,
) -> None:
    """A device's readings history in WIB: raw, or 1 minute / 1 hour rollups for long ranges."""
    try:
        query = readings.plan(
            device_id, metric or [], start, end, resolution, datetime.now(UTC), naive=WIB
        )
    except registry.Invalid as exc:
        raise ConfigError(_readings_problems(exc)) from None
    try:
        found = _run(lambda conn: readings.history(conn, query))
    except _InvalidOptions as exc:
        raise ConfigError(_readings_problems(exc.invalid)) from None
    if as_csv:
        typer.echo(readings.to_csv(found), nl=False)
        return
    typer.echo(
        f"{found.device_id}: {len(found.rows)} rows at resolution {found.resolution}, "
        f"{found.start:%Y-%m-%d %H:%M} .. {found.end:%Y-%m-%d %H:%M} WIB"
    )
    raw = found.resolution == "raw"
    typer.echo(
        f"{'time (WIB)':<19}  {'metric':<20} {'value' if raw else 'avg':>12}"
        + ("" if raw else f" {'min':>12} {'max':>12} {'samples':>8}")
    )
    for when, name, value, low, high, samples in found.rows:
        line = f"{when:%Y-%m-%d %H:%M:%S}  {name:<20} {value:>12g}"
        if not raw:
            line += f" {low:>12g} {high:>12g} {samples:>8}"
        typer.echo(line)


_READINGS_OPTIONS = {"from": "--from", "to": "--to", "range": "--from/--to", "rows": "--from/--to"}


def _readings_problems(exc: registry.Invalid) -> str:
    return _problems(exc, _READINGS_OPTIONS).replace("resolution=", "--resolution ")


@app.command("edit")
def edit(
    device_id: Annotated[str, typer.Argument()],
    name: Annotated[str | None, Opt()] = None,
    device_type: Annotated[str | None, Opt("--type")] = None,
    kecamatan: Annotated[str | None, Opt()] = None,
    latitude: Annotated[float | None, Opt("--lat")] = None,
    longitude: Annotated[float | None, Opt("--lon")] = None,
    address_note: Annotated[str | None, Opt("--address")] = None,
    status: Annotated[str | None, Opt(help="active, maintenance or retired")] = None,
    payload_format: Annotated[str | None, Opt("--format")] = None,
    expected_interval_seconds: Annotated[int | None, Opt("--interval")] = None,
    allow_outside: Annotated[bool, Opt()] = False,
) -> None:
    """Change the given fields of a device (refused if it changes under you meanwhile)."""
    given = {
        k: v
        for k, v in dict(
            name=name,
            device_type=device_type,
            kecamatan=kecamatan,
            latitude=latitude,
            longitude=longitude,
            address_note=address_note,
            status=status,
            payload_format=payload_format,
            expected_interval_seconds=expected_interval_seconds,
        ).items()
        if v is not None
    }
    if not given:
        raise ConfigError("nothing to change: give at least one option, e.g. --status maintenance")
    _check_position(latitude, longitude)
    patch = _validated(DevicePatch, **given, allow_outside=allow_outside)

    device = _change(device_id, patch)
    typer.echo(f"{device.device_id} is now at version {device.version}")
    _show(device)


@app.command("retire")
def retire(device_id: Annotated[str, typer.Argument()]) -> None:
    """Retire a device (kept in the registry and its history; it may no longer report)."""
    settings = _settings()

    async def work(conn: psycopg.AsyncConnection) -> str | None:
        try:
            async with conn.transaction():  # the device row is locked from read to change
                device = await registry.retire_device(conn, device_id, None, cliapp.actor())
                await issuer_for(settings.mqtt).follow(conn, device, cliapp.actor())
        except registry.AlreadyRetired as exc:
            return str(exc)
        return None

    already = _run(work)
    # Retired already: what the user asked for holds, so say so and exit 0 (scripts may repeat).
    typer.echo(already or f"{device_id} retired; its MQTT credentials no longer work")


@app.command("credentials")
def credentials(
    device_id: Annotated[str, typer.Argument()],
    qr: Annotated[bool, Opt(help="also print the configuration as a QR code")] = False,
) -> None:
    """Issue new MQTT credentials (an imported device, a lost password); the old ones stop."""
    settings = _settings()

    async def work(conn: psycopg.AsyncConnection) -> Registered:
        async with conn.transaction():
            device = await registry.get_device(conn, device_id)
            creds = await renew(conn, device, issuer_for(settings.mqtt), cliapp.actor())
            device = await registry.get_device(conn, device_id)
            registered = await registration(conn, device, creds, settings.mqtt)
        registered.warning = registry.credentials_warning(device)
        return registered

    _credentials(_run(work), qr)


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="a .csv, .xlsx or .geojson file")],
    fmt: Annotated[
        str | None, Opt("--format", help="csv, xlsx or geojson (default: from the file name)")
    ] = None,
) -> None:
    """Create and update devices from a file: all or nothing, every error with its line."""
    kinds: dict[str, exchange.Kind] = {"csv": "csv", "xlsx": "xlsx", "geojson": "geojson"}
    kind = kinds.get(fmt) if fmt else exchange.kind_of(file)
    if kind is None:
        raise ConfigError(
            f"--format {fmt!r}: expected csv, xlsx or geojson"
            if fmt
            else f"{file}: expected a .csv, .xlsx or .geojson file (or give --format)"
        )
    try:
        file.open("rb").close()
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}") from None
    settings = cliapp.settings()

    async def work(conn: psycopg.AsyncConnection) -> exchange.Imported:
        try:
            async with conn.transaction():
                imported = await exchange.import_devices(
                    conn,
                    exchange.file_source(file, kind, settings.devices.import_max_rows),
                    cliapp.actor(),
                    settings.devices.import_max_rows,
                )
                for device in imported.follow:
                    await issuer_for(settings.mqtt).follow(conn, device, cliapp.actor())
                return imported
        except registry.Invalid as exc:
            raise ConfigError(_import_problems(file, exc.problems)) from None

    imported = _run(work)
    typer.echo(
        f"imported {file}: {imported.created} created, {imported.updated} updated, "
        f"{imported.unchanged} unchanged"
    )
    if imported.created and settings.mqtt.dynsec:
        typer.echo("new devices have no MQTT credentials yet: `pantau devices credentials ID`")


def _import_problems(file: Path, problems: list[Problem]) -> str:
    """One problem per line, where the file has it: `devices.csv:3: row 2: name: ...`."""
    lines = [f"{file}: nothing imported, {len(problems)} problem(s):"]
    for p in problems:
        where = f"{file}:{p.line}: " if p.line is not None else f"{file}: "
        row = f"row {p.row}: " if p.row is not None else ""
        lines.append(f"{where}{row}{p.field}: {p.message}")
    return "\n".join(lines)


@app.command("export")
def export(
    fmt: Annotated[str, Opt("--format", help="csv, xlsx or geojson")] = "csv",
    output: Annotated[Path | None, Opt("--output", "-o", help="file (default: stdout)")] = None,
    delimiter: Annotated[
        str, Opt(help="CSV: ',' or ';' (with decimal commas, for Excel in the id-ID locale)")
    ] = ",",
) -> None:
    """Export every device as CSV, XLSX or GeoJSON."""
    if delimiter not in (",", ";"):
        raise ConfigError(f"--delimiter {delimiter!r}: expected ',' or ';'")
    writers: dict[str, Callable[[list[Device]], bytes]] = {
        "csv": lambda devices: exchange.to_csv(devices, delimiter).encode(),
        "xlsx": exchange.to_xlsx,
        "geojson": exchange.to_geojson,
    }
    if fmt not in writers:
        raise ConfigError(f"--format {fmt!r}: expected csv, xlsx or geojson")
    devices = _run(lambda conn: registry.list_devices(conn, registry.Filters(limit=1_000_000)))
    data = writers[fmt](devices)
    if output is None:
        sys.stdout.buffer.write(data)
    else:
        output.write_bytes(data)
        typer.echo(f"wrote {len(devices)} devices to {output}", err=True)


@app.command("types")
def types() -> None:
    """Device types, their metrics, units and alarm thresholds."""
    for t in _run(registry.device_types):
        typer.echo(
            f"{t.id:<16} {t.name_id} ({t.name}); pillar {t.pillar}; "
            f"every {t.expected_interval_seconds}s"
        )
        for m in t.metrics:
            alarm = ", ".join(
                f"{k} {v:g}"
                for k, v in (
                    ("warn above", m.warn_high),
                    ("alarm above", m.alarm_high),
                    ("warn below", m.warn_low),
                    ("alarm below", m.alarm_low),
                )
                if v is not None
            )
            typer.echo(
                f"    {m.metric:<20} {m.unit:<9} valid {m.valid_min:g}..{m.valid_max:g}  {alarm}"
            )


@app.command("watch")
def watch(
    device_id: Annotated[str, typer.Argument()],
    seconds: Annotated[float | None, Opt(help="stop after this long (default: Ctrl-C)")] = None,
) -> None:
    """Print the device's readings as they are stored (checked every second)."""
    settings = _settings()

    async def go() -> None:
        # Ctrl-C (or SIGTERM) sets `stop`, looked at between two reads: a cancellation landing
        # inside a query was sometimes taken in by the driver, and the watch went on.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        async with await db.connect(settings.database, autocommit=True) as conn:
            await registry.get_device(conn, device_id)
            typer.echo(f"watching {device_id} (Ctrl-C to stop) ...")
            since = datetime.now(UTC)
            deadline = None if seconds is None else time.monotonic() + seconds
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                cur = await conn.execute(
                    "SELECT time, metric, value FROM readings WHERE device_id = %s AND time > %s"
                    " ORDER BY time, metric",
                    (device_id, since),
                )
                for when, metric, value in await cur.fetchall():
                    typer.echo(
                        f"{when.astimezone(WIB):%Y-%m-%d %H:%M:%S} WIB  {metric} = {value:g}"
                    )
                    since = max(since, when)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

    try:
        asyncio.run(go())
    except registry.RegistryError as exc:
        raise ConfigError(str(exc)) from None
    except KeyboardInterrupt:
        pass


def _change(device_id: str, patch: DevicePatch) -> Device:
    """Apply `patch` at the version just read (refused if the device changes meanwhile); the
    device's broker client follows."""
    settings = _settings()

    async def work(conn: psycopg.AsyncConnection) -> Device:
        async with conn.transaction():
            current = await registry.get_device(conn, device_id)
            device = await registry.update_device(
                conn, device_id, patch, current.version, cliapp.actor()
            )
            await issuer_for(settings.mqtt).follow(conn, device, cliapp.actor())
            return device

    return _run(work)


def _validated(model: type[T], **values: Any) -> T:
    from pydantic import ValidationError

    try:
        return model.model_validate(  # type: ignore[attr-defined, no-any-return]
            {k: v for k, v in values.items() if v is not None}, strict=False
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{_option(str(e['loc'][0]))}"
            + (f" {e['input']!r}" if e["loc"] and not isinstance(e["input"], dict) else "")
            + f": {e['msg']}"
            for e in exc.errors()
        )
        raise ConfigError(problems) from None
