"""`pantau outages` and `pantau maintenance ...`: the outage history and maintenance windows from
a terminal, with the API's checks. Times in WIB; a time typed without an offset is WIB."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar, get_args

import psycopg
import pydantic
import typer
from pydantic_core import ErrorDetails

from devices import readings, registry
from devices.outages import history
from pantau import cliapp, db, logs
from pantau.cliapp import WIB
from pantau.errors import ConfigError

T = TypeVar("T")
Opt = typer.Option
maintenance_app = typer.Typer(
    help="Maintenance windows: devices in one never alert, and its time is left out of "
    "availability.",
    no_args_is_help=True,
)
_OPTIONS = {"device_type": "--type", "to": "--to", "from": "--from", "kecamatan": "--kecamatan"}


def register(app: typer.Typer) -> None:
    app.command("outages")(outages)
    app.add_typer(maintenance_app, name="maintenance")


def _run(work: Callable[[psycopg.AsyncConnection], Awaitable[T]]) -> T:
    settings = cliapp.settings(configure_logs=False)
    level = max(logging.WARNING, logging.getLevelName(settings.log.level))
    logs.configure(logging.getLevelName(level), settings.log.format)

    async def go() -> T:
        async with await db.connect(settings.database, autocommit=True) as conn:
            return await work(conn)

    try:
        return asyncio.run(go())
    except registry.Invalid as exc:
        raise ConfigError(_problems(exc)) from None
    except registry.RegistryError as exc:
        raise ConfigError(str(exc)) from None


def _problems(exc: registry.Invalid) -> str:
    return "; ".join(
        f"{_OPTIONS.get(p.field, '--' + p.field.replace('_', '-'))}: {p.message}"
        for p in exc.problems
    )


def _time(option: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return readings.parse_time(option, text, WIB)
    except registry.Invalid as exc:
        raise ConfigError(_problems(exc)) from None


def _wib(t: datetime | None) -> str:
    return f"{t.astimezone(WIB):%Y-%m-%d %H:%M}" if t else "-"


def duration(seconds: float) -> str:
    """A duration as operators read it: "2 j 15 m" (jam, menit), "3 h 4 j" (hari), "40 d"."""
    s = int(seconds)
    days, s = divmod(s, 86_400)
    hours, s = divmod(s, 3_600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days} h {hours} j"
    if hours:
        return f"{hours} j {minutes} m"
    if minutes:
        return f"{minutes} m"
    return f"{s} d"


def _what(o: history.Outage) -> str:
    if o.kind == "area":
        share = o.detail.get("share")
        shown = f", {float(share):.0%} mati" if isinstance(share, int | float) else ""
        return f"area: {o.grouped} perangkat{shown}"
    name = f" ({o.device_name})" if o.device_name and o.device_name != o.device_id else ""
    return f"{o.device_id}{name}"


def outages(
    current: Annotated[bool, Opt("--current", help="only those not ended")] = False,
    kind: Annotated[str | None, Opt(help="device, area or alarm")] = None,
    kecamatan: Annotated[str | None, Opt(help="id or name, e.g. setu or 'Cikarang Pusat'")] = None,
    device_type: Annotated[str | None, Opt("--type", help="e.g. water_level")] = None,
    start: Annotated[
        str | None, Opt("--from", help="ISO 8601; without an offset, WIB (e.g. 2026-12-01)")
    ] = None,
    end: Annotated[str | None, Opt("--to", help="default: now")] = None,
    limit: Annotated[int, Opt(min=1, max=100_000)] = 100,
) -> None:
    """Outages and value alarms, current ones first (times in WIB)."""
    kinds = get_args(history.Kind)
    if kind is not None and kind not in kinds:
        raise ConfigError(f"--kind: {kind!r} is not a kind; expected one of {', '.join(kinds)}")
    query = history.Query(
        kind,
        kecamatan,
        device_type,
        "current" if current else "all",
        _time("--from", start),
        _time("--to", end),
        limit,
    )
    found = _run(lambda conn: history.outages(conn, query))
    if not found:
        typer.echo("tidak ada gangguan (no outages)" + (" now" if current else ""))
        return
    typer.echo(
        f"{'id':>6} {'kind':<6} {'kecamatan':<17} {'severity':<8} {'cause':<12} "
        f"{'started (WIB)':<16} {'ended (WIB)':<16} {'duration':<9} what"
    )
    for o in found:
        ended = _wib(o.ended_at) if o.ended_at else "masih (now)"
        typer.echo(
            f"{o.id:>6} {o.kind:<6} {o.kecamatan:<17} {o.severity:<8} {o.cause:<12} "
            f"{_wib(o.started_at):<16} {ended:<16} {duration(o.duration_seconds):<9} {_what(o)}"
        )
    open_ = sum(1 for o in found if o.ended_at is None)
    typer.echo(f"{len(found)} outages, {open_} current")


def _window_line(w: history.Window) -> str:
    target = w.device_id or f"kecamatan {w.kecamatan}"
    state = "berlaku (now)" if w.current else ""
    ends = _wib(w.ends_at) if w.ends_at else "open"
    return f"{w.id:>6} {target:<28} {_wib(w.starts_at):<16} {ends:<16} {state:<13} {w.reason}"


_WINDOW_HEADER = (
    f"{'id':>6} {'device / area':<28} {'from (WIB)':<16} {'to (WIB)':<16} {'':<13} reason"
)


@maintenance_app.command("add")
def add(
    device_id: Annotated[str | None, typer.Argument(help="the device; or --kecamatan")] = None,
    kecamatan: Annotated[str | None, Opt(help="every device of this kecamatan")] = None,
    start: Annotated[
        str | None, Opt("--from", help="ISO 8601, without an offset WIB; default: now")
    ] = None,
    end: Annotated[str | None, Opt("--to", help="ISO 8601, without an offset WIB")] = None,
    reason: Annotated[str | None, Opt(help="what is done, e.g. 'ganti baterai'")] = None,
) -> None:
    """Plan a maintenance window for DEVICE or --kecamatan K, --from .. --to, with --reason."""
    if (device_id is None) == (kecamatan is None):
        raise ConfigError("expected a DEVICE or --kecamatan K, exactly one of the two")
    if end is None:
        raise ConfigError("--to: expected when the window ends, e.g. 2026-12-01T17:00 (WIB)")
    if not reason:
        raise ConfigError("--reason: expected what is done, e.g. --reason 'ganti baterai'")
    starts = _time("--from", start) or datetime.now(UTC)
    ends = _time("--to", end)
    try:
        data = history.WindowIn.model_validate(
            {
                **({"device_id": device_id} if device_id else {"kecamatan": kecamatan}),
                "starts_at": starts,
                "ends_at": ends,
                "reason": reason,
            }
        )
    except pydantic.ValidationError as exc:
        raise ConfigError(
            "; ".join(_validation_message(e) for e in exc.errors(include_url=False))
        ) from None
    window = _run(lambda conn: history.add_window(conn, data, cliapp.actor()))
    typer.echo(f"planned maintenance window {window.id}")
    typer.echo(_WINDOW_HEADER)
    typer.echo(_window_line(window))


_FIELD_OPTIONS = {
    "device_id": "DEVICE",
    "kecamatan": "--kecamatan",
    "starts_at": "--from",
    "ends_at": "--to",
    "reason": "--reason",
}


def _validation_message(error: ErrorDetails) -> str:
    loc = error.get("loc") or ()
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    message = message.replace("ends_at must be after starts_at", "--to must be after --from")
    where = _FIELD_OPTIONS.get(str(loc[0])) if loc else None
    return f"{where}: {message}" if where else message


@maintenance_app.command("list")
def list_(
    device: Annotated[str | None, Opt(help="one device's windows")] = None,
    kecamatan: Annotated[str | None, Opt(help="the kecamatan's windows and its devices'")] = None,
    current: Annotated[bool, Opt("--current", help="only those in force now")] = False,
) -> None:
    """Maintenance windows, newest first (times in WIB)."""
    found = _run(
        lambda conn: history.windows(conn, device, kecamatan, True if current else None, 100_000)
    )
    if not found:
        typer.echo("no maintenance windows")
        return
    typer.echo(_WINDOW_HEADER)
    for w in found:
        typer.echo(_window_line(w))
    typer.echo(f"{len(found)} windows, {sum(1 for w in found if w.current)} in force now")


@maintenance_app.command("end")
def end_(window_id: Annotated[str, typer.Argument(help="its id, from `maintenance list`")]) -> None:
    """End a maintenance window now (one not started yet is cancelled)."""
    if not window_id.isdigit() or not 0 < int(window_id) < 2**63:
        raise ConfigError(
            f"ID: {window_id!r} is not a window id; expected a number from `pantau maintenance "
            "list`"
        )
    window = _run(lambda conn: history.end_window(conn, int(window_id), cliapp.actor()))
    typer.echo(f"ended maintenance window {window.id} at {_wib(window.ends_at)} WIB")
