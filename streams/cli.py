"""`pantau cameras ...`: the cameras from a terminal, with the API's checks: their state, their
stream settings (URLs always redacted), a snapshot to a file. Times in WIB."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import psycopg
import pydantic
import typer

from devices import registry
from pantau import cliapp, db, logs
from pantau.cliapp import WIB
from pantau.errors import ConfigError
from pantau.settings import Settings

if TYPE_CHECKING:  # imported by the commands that need them: every `pantau` start is lighter
    from streams import cameras
    from streams.snapshots import SnapshotStore

T = TypeVar("T")
Opt = typer.Option
app = typer.Typer(
    help="CCTV cameras: their state, stream settings and snapshots.", no_args_is_help=True
)
# The option a user typed for each field of the API's body.
_OPTIONS = {
    "rtsp_url": "--url",
    "probe_interval_seconds": "--interval",
    "enabled": "--enable/--disable",
    "thresholds.black_luma": "--black-luma",
    "thresholds.covered_ratio": "--covered-ratio",
    "thresholds.frozen_samples": "--frozen-samples",
    "thresholds.bad_samples": "--bad-samples",
}


def _settings() -> Settings:
    settings = cliapp.settings(configure_logs=False)
    level = max(logging.WARNING, logging.getLevelName(settings.log.level))
    logs.configure(logging.getLevelName(level), settings.log.format)
    return settings


def _run(work: Callable[[psycopg.AsyncConnection, SnapshotStore], Awaitable[T]]) -> T:
    from streams.snapshots import SnapshotStore

    settings = _settings()
    store = SnapshotStore(settings.streams.snapshot_dir, settings.streams)

    async def go() -> T:
        async with await db.connect(settings.database, autocommit=True) as conn:
            return await work(conn, store)

    try:
        return asyncio.run(go())
    except registry.Invalid as exc:
        raise ConfigError(
            "; ".join(f"{_OPTIONS.get(p.field, p.field)}: {p.message}" for p in exc.problems)
        ) from None
    except registry.RegistryError as exc:
        raise ConfigError(str(exc)) from None


def _wib(t: datetime | None) -> str:
    return f"{t.astimezone(WIB):%Y-%m-%d %H:%M}" if t else "-"


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _check(c: cameras.Camera) -> str:
    """The newest check's state, with the offline reason."""
    if c.state is None:
        return "unchecked"
    return f"{c.state}:{c.reason}" if c.reason else c.state


def _state(c: cameras.Camera) -> str:
    if not c.configured:
        return "no stream"
    return "disabled" if c.enabled is False else _check(c)


@app.command("list")
def list_(
    limit: Annotated[int, Opt(min=1, max=5000, help="at most this many")] = 1000,
) -> None:
    """Every camera: state (with the offline reason), since when (WIB), fps, bitrate, the
    latest snapshot's age and the stream (redacted)."""
    from streams import cameras

    found = _run(lambda conn, store: cameras.list_cameras(conn, store, limit))
    if not found:
        typer.echo("no cameras (register one: pantau devices add --type camera ...)")
        return
    typer.echo(
        f"{'camera':<24} {'state':<18} {'since (WIB)':<16} {'fps':>5} {'kbps':>7} "
        f"{'snap':>6}  stream"
    )
    for c in found:
        age = "-" if c.snapshot_age_seconds is None else f"{c.snapshot_age_seconds} s"
        typer.echo(
            f"{c.device_id:<24} {_state(c):<18} {_wib(c.since):<16} {_number(c.fps):>5} "
            f"{_number(c.bitrate_kbps, 0):>7} {age:>6}  {c.rtsp_url or '-'}"
        )
    down = sum(1 for c in found if c.state in ("offline", "frozen", "black", "covered"))
    typer.echo(f"{len(found)} cameras, {down} down")


@app.command("show")
def show(device_id: Annotated[str, typer.Argument(help="the camera's device id")]) -> None:
    """One camera: its stream (redacted), thresholds and its newest check."""
    from streams import cameras
    from streams.snapshots import REASONS_ID

    c = _run(lambda conn, store: cameras.get_camera(conn, store, device_id))
    reason = f" ({REASONS_ID.get(c.reason, c.reason)})" if c.reason else ""
    size = f"{c.width}x{c.height}" if c.width and c.height else "-"
    thresholds = ", ".join(
        f"{k}={'default' if v is None else v}" for k, v in c.thresholds.model_dump().items()
    )
    lines = [
        ("camera", f"{c.device_id} ({c.name}), kecamatan {c.kecamatan}, {c.status}"),
        ("stream", c.rtsp_url or "not set (pantau cameras set ID --url rtsp://...)"),
        ("interval", f"{c.probe_interval_seconds:g} s" if c.probe_interval_seconds else "-"),
        ("enabled", "-" if c.enabled is None else ("yes" if c.enabled else "no")),
        ("thresholds", thresholds),
        ("state", f"{_check(c)}{reason}"),
        ("checked", f"{_wib(c.checked_at)} WIB" if c.checked_at else "never"),
        ("since", f"{_wib(c.since)} WIB" if c.since else "-"),
        ("detector", c.liveness or "-"),
        (
            "video",
            f"{c.codec or '-'} {size}, {_number(c.fps)} fps, {_number(c.bitrate_kbps, 0)} kbit/s",
        ),
        ("snapshot", "-" if c.snapshot_age_seconds is None else f"{c.snapshot_age_seconds} s old"),
    ]
    for key, value in lines:
        typer.echo(f"{key + ':':<12}{value}")


@app.command("set")
def set_(
    device_id: Annotated[str, typer.Argument(help="the camera's device id (type camera)")],
    url: Annotated[
        str | None,
        Opt(
            help="rtsp:// or rtsps:// URL, credentials included (stored, never shown); "
            "needed the first time"
        ),
    ] = None,
    interval: Annotated[float | None, Opt(help="seconds per check, 1 to 3600")] = None,
    enable: Annotated[bool | None, Opt("--enable/--disable", help="probe it or not")] = None,
    black_luma: Annotated[float | None, Opt(help="0-255; black at or below")] = None,
    covered_ratio: Annotated[float | None, Opt(help="between 0 and 1")] = None,
    frozen_samples: Annotated[int | None, Opt(help="2 to 100")] = None,
    bad_samples: Annotated[int | None, Opt(help="1 to 100")] = None,
    default_thresholds: Annotated[
        bool, Opt("--default-thresholds", help="back to the [streams] settings' thresholds")
    ] = False,
) -> None:
    """Set a camera's stream; what is not given keeps its value (audited, picked up at once)."""
    from streams import cameras

    async def work(conn: psycopg.AsyncConnection, store: SnapshotStore) -> cameras.Camera:
        current = await cameras.stored(conn, device_id)
        if current is None and url is None:
            await cameras.get_camera(conn, store, device_id)  # not a camera: say so first
            raise ConfigError(
                f"--url: expected the stream of {device_id}, e.g. --url "
                "rtsp://user:password@10.20.0.5:554/Streaming/Channels/101"
            )
        data = current.model_dump() if current else {}
        thresholds = {} if default_thresholds else dict(data.get("thresholds") or {})
        given = {
            "black_luma": black_luma,
            "covered_ratio": covered_ratio,
            "frozen_samples": frozen_samples,
            "bad_samples": bad_samples,
        }
        thresholds |= {k: v for k, v in given.items() if v is not None}
        changes = {"rtsp_url": url, "probe_interval_seconds": interval, "enabled": enable}
        data |= {k: v for k, v in changes.items() if v is not None}
        data["thresholds"] = thresholds
        try:
            body = cameras.CameraIn.model_validate(data)
        except pydantic.ValidationError as exc:
            raise ConfigError(
                "; ".join(
                    f"{_OPTIONS.get('.'.join(map(str, e['loc'])), e['loc'][0])}: "
                    + str(e["msg"]).replace("Input should be", "expected")
                    for e in exc.errors(include_url=False, include_input=False)
                )
            ) from None
        async with conn.transaction():
            await cameras.set_camera(conn, device_id, body, cliapp.actor())
        return await cameras.get_camera(conn, store, device_id)

    camera = _run(work)
    typer.echo(
        f"{camera.device_id}: {camera.rtsp_url}, every {camera.probe_interval_seconds:g} s, "
        f"{'enabled' if camera.enabled else 'disabled'} (version {camera.version})"
    )


@app.command("snapshot")
def snapshot(
    device_id: Annotated[str, typer.Argument(help="the camera's device id")],
    output: Annotated[Path, Opt("--output", "-o", help="the JPEG file to write")],
) -> None:
    """Write the camera's latest picture to a file, or the "offline since ..." placeholder when
    it is down or its picture stale (as the API serves it)."""
    from streams import cameras

    found = _run(lambda conn, store: cameras.snapshot(conn, store, device_id))
    try:
        output.write_bytes(found.jpeg)
    except OSError as exc:
        raise ConfigError(f"--output: cannot write {output}: {exc.strerror}") from None
    if found.placeholder:
        why = {"down": f"camera {found.state}", "stale": "picture stale", "none": "no picture"}
        typer.echo(f"wrote {output}: placeholder ({why[found.shown]})")
    else:
        age = found.headers()["X-Snapshot-Age"]
        typer.echo(f"wrote {output}: latest picture, {age} s old ({len(found.jpeg)} bytes)")
