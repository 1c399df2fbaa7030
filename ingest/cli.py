"""`pantau quarantine ...` and `pantau simulate`."""

from __future__ import annotations

from typing import Annotated

import psycopg
import typer

from ingest.batch import Processor
from ingest.decoders import REASONS
from ingest.writer import DatabaseDown, Writer
from pantau import cliapp
from pantau.cliapp import WIB
from pantau.errors import ConfigError, DatabaseUnavailable

quarantine_app = typer.Typer(
    help="Payloads that could not be decoded or mapped.", no_args_is_help=True
)

ReasonOption = Annotated[
    list[str] | None,
    typer.Option("--reason", "-r", help=f"only this reason (repeatable): {', '.join(REASONS)}"),
]


def _check_reasons(reasons: list[str] | None) -> list[str]:
    for reason in reasons or []:
        if reason not in REASONS:
            raise ConfigError(f"--reason {reason!r}: expected one of {', '.join(REASONS)}")
    return reasons or []


def _connect(url: str) -> psycopg.Connection:
    try:
        return psycopg.connect(url, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(
            f"cannot connect to the database: {' '.join(str(exc).split())}"
        ) from None


@quarantine_app.command("list")
def quarantine_list(
    reason: ReasonOption = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many entries")] = 50,
    include_resolved: Annotated[bool, typer.Option("--all", help="include resolved ones")] = False,
) -> None:
    """List quarantined payloads, newest first, with a count per reason, and the hours in which
    a device sent more than was kept whole."""
    from ingest.quarantine import counts, list_entries, summaries, summarised_total

    reasons = _check_reasons(reason)
    settings = cliapp.settings()
    with _connect(settings.database.url) as conn:
        entries = list_entries(
            conn, reasons=reasons, limit=limit, include_resolved=include_resolved
        )
        per_reason = counts(conn)
        hours = summaries(conn, limit=limit)
        only_counted = summarised_total(conn)
    for e in entries:
        when = e.received_at.astimezone(WIB).strftime("%Y-%m-%d %H:%M:%S")
        payload = e.payload[:60].decode("utf-8", "replace").replace("\n", " ")
        state = " (resolved)" if e.resolved_at else ""
        again = f" (came {e.repeats} more times)" if e.repeats else ""
        typer.echo(f"#{e.id}  {when} WIB  {e.reason}{state}  {e.topic}{again}")
        typer.echo(f"    {e.detail}")
        more = "..." if len(e.payload) > 60 else ""
        cut = f" (first {len(e.payload):,} of {e.payload_size:,} bytes kept)" if e.cut else ""
        typer.echo(f"    payload: {payload}{more}{cut}")
    for h in hours:
        when = h.hour.astimezone(WIB).strftime("%Y-%m-%d %H:00")
        by_reason = ", ".join(f"{r}: {n:,}" for r, n in sorted(h.reasons.items()))
        if h.summarised:
            typer.echo(
                f"{when} WIB  {h.summarised:,} more payloads from {h.source} ({by_reason}), "
                f"not kept whole ({h.kept:,} kept, {h.summarised_bytes:,} bytes)"
            )
        if h.dropped:
            typer.echo(
                f"{when} WIB  {h.dropped:,} payloads from {h.source} deleted to stay under "
                "ingest.quarantine_max_bytes"
            )
    total = sum(per_reason.values())
    summary = ", ".join(f"{r}: {n}" for r, n in per_reason.items())
    typer.echo(
        f"{total} in quarantine"
        + (f" ({summary})" if summary else "")
        + (f", {only_counted:,} more only counted" if only_counted else "")
    )


@quarantine_app.command("replay")
def quarantine_replay(reason: ReasonOption = None) -> None:
    """Run quarantined payloads through the current mappings; write what decodes now."""
    from ingest.quarantine import processor_limits, replay

    reasons = _check_reasons(reason)
    settings = cliapp.settings()
    s = settings.ingest
    processor = Processor.from_settings(
        s.mappings, s.max_future_seconds, s.max_past_days, **processor_limits(s)
    )
    writer = Writer.from_settings(settings)
    try:
        with _connect(settings.database.url) as conn:
            report = replay(conn, writer, processor, reasons=reasons)
    except DatabaseDown as exc:
        raise DatabaseUnavailable(f"database lost during replay: {exc}") from None
    finally:
        writer.close()
    still = ", ".join(f"{r}: {n}" for r, n in sorted(report.still.items()))
    typer.echo(
        f"replayed {report.replayed}: {report.resolved} resolved ({report.readings} new readings)"
        + (f", still in quarantine: {still}" if still else "")
        + (f"; {report.cut} kept only in part (too large), not replayed" if report.cut else "")
    )


def simulate(
    devices: Annotated[int, typer.Option(min=1, help="how many simulated devices")] = 100,
    rate: Annotated[float, typer.Option(min=0.1, help="messages per second, all devices")] = 20.0,
    fmt: Annotated[
        str, typer.Option("--format", help="payload format: mixed, number, json or senml")
    ] = "mixed",
    duration: Annotated[
        float | None, typer.Option(min=0.1, help="stop after this many seconds")
    ] = None,
) -> None:
    """Publish realistic readings of simulated devices across the 23 kecamatan."""
    import threading

    from ingest.simulator import FORMATS, Simulator, build_devices

    if fmt not in (*FORMATS, "mixed"):
        raise ConfigError(f"--format {fmt!r}: expected mixed, number, json or senml")
    settings = cliapp.settings()
    m = settings.mqtt
    simulator = Simulator(
        build_devices(devices, fmt),  # type: ignore[arg-type]
        host=m.host,
        port=m.port,
        rate=rate,
        username=m.username,
        password=m.password.get_secret_value() if m.password else None,
    )
    typer.echo(f"publishing {rate:g} messages/s from {devices} devices to {m.host}:{m.port} ...")
    stop = threading.Event()
    try:
        sent = simulator.run(stop, duration)
    except OSError as exc:
        raise ConfigError(f"cannot reach the MQTT broker {m.host}:{m.port}: {exc}") from None
    except KeyboardInterrupt:
        sent = simulator.sent
    refused = f", {simulator.refused} refused by the broker" if simulator.refused else ""
    typer.echo(f"sent {sent} messages{refused}")


def retire(
    timeout: Annotated[
        float, typer.Option(min=1, help="give up (keeping what is left) after this many seconds")
    ] = 300.0,
) -> None:
    """Retire this instance for good, once it is stopped: replay its spools into the database,
    take what the broker queued for its MQTT sessions, then end them at the broker."""
    from ingest.retire import retire_instance

    settings = cliapp.settings()
    done = retire_instance(settings, timeout)
    for client_id in done.ended:
        typer.echo(f"session {client_id}: drained and ended")
    for client_id in done.left:
        typer.echo(f"session {client_id}: NOT ended (the broker keeps it and its queue)")
    if done.spool_left:
        typer.echo(
            f"spool: {len(done.spool_left)} segments not replayed in "
            f"{settings.ingest.spool_dir} (is the database up?)"
        )
    if done.left or done.spool_left:
        typer.echo("not finished: run `pantau retire` again")
        raise typer.Exit(1)
    typer.echo(f"retired: spool {settings.ingest.spool_dir} empty, no session left at the broker")


def register(app: typer.Typer) -> None:
    app.add_typer(quarantine_app, name="quarantine")
    app.command("simulate")(simulate)
    app.command("retire")(retire)
