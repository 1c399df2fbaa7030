"""`pantau quarantine dead-letters`: list, show and replay what the spool set aside."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ingest.deadletters import DeadLetter, DeadLetters, replay
from ingest.writer import DatabaseDown, Writer
from pantau import cliapp
from pantau.cliapp import WIB
from pantau.errors import ConfigError, DatabaseUnavailable


def dead_letters(
    show: Annotated[
        str | None, typer.Option("--show", help="print the messages of this dead letter")
    ] = None,
    do_replay: Annotated[
        bool, typer.Option("--replay", help="write the batches again; remove what commits")
    ] = False,
) -> None:
    """Spool records set aside in <spool_dir>/dead (and <spool_dir>/<i>/dead, ingest process
    i's): refused on replay, or corrupt."""
    settings = cliapp.settings()
    folders = [DeadLetters(d) for d in directories(settings.ingest.spool_dir)]
    entries = [e for letters in folders for e in letters.entries()]
    if show is not None:
        found = [e for e in entries if e.name == show or e.path.name == show]
        if not found:
            names = ", ".join(e.name for e in entries) or "none"
            raise ConfigError(f"--show {show!r}: no such dead letter (there are: {names})")
        _show(found[0])
        return
    if do_replay:
        writer = Writer.from_settings(settings)
        try:
            registry = None
            if settings.ingest.unregistered_devices == "quarantine":
                writer.connect()
                registry = writer.registered_devices()
            reports = [replay(letters, writer, registry=registry) for letters in folders]
        except DatabaseDown as exc:
            raise DatabaseUnavailable(f"database down: {exc}") from None
        finally:
            writer.close()
        replayed = sum(len(r.replayed) for r in reports)
        typer.echo(f"replayed {replayed} ({sum(r.readings for r in reports)} new readings)")
        for report in reports:
            for name, error in report.failed.items():
                typer.echo(f"still refused: {name}: {error}")
        corrupt = [name for r in reports for name in r.corrupt]
        if corrupt:
            typer.echo(f"corrupt, kept for inspection: {', '.join(corrupt)}")
        return
    for e in entries:
        when = e.set_aside_at.astimezone(WIB).strftime("%Y-%m-%d %H:%M:%S")
        what = (
            f"{e.readings} readings from {e.messages} messages"
            if e.kind == "refused"
            else f"{len(e.raw)} bytes"
        )
        devices = f" ({', '.join(e.devices[:5])}{', ...' if len(e.devices) > 5 else ''})"
        typer.echo(f"{e.name}  {when} WIB  {e.kind}  {what}{devices if e.devices else ''}")
        typer.echo(f"    {e.error}")
    size = sum(len(e.raw) for e in entries)
    where = ", ".join(str(letters.directory) for letters in folders)
    typer.echo(f"{len(entries)} dead letters ({size} bytes) in {where}")


def directories(spool_dir: Path) -> list[Path]:
    """<spool_dir>/dead, then each ingest process's <spool_dir>/<i>/dead that exists (with
    ingest.processes > 1 each process sets aside into its own spool's)."""
    numbered = sorted(
        (int(d.name), d / "dead")
        for d in (spool_dir.iterdir() if spool_dir.is_dir() else [])
        if d.name.isdigit() and (d / "dead").is_dir()
    )
    return [spool_dir / "dead", *(dead for _, dead in numbered)]


def _show(letter: DeadLetter) -> None:
    typer.echo(f"{letter.name}: {letter.kind}, from {letter.segment} byte {letter.offset}")
    typer.echo(f"error: {letter.error}")
    batch = letter.batch()
    if batch is None:
        typer.echo(f"bytes: {letter.raw[:256].hex(' ')}{' ...' if len(letter.raw) > 256 else ''}")
        return
    for m in batch.messages:
        payload = m.payload[:200].decode("utf-8", "replace").replace("\n", " ")
        typer.echo(f"{m.received_at.astimezone(WIB):%Y-%m-%d %H:%M:%S} WIB  {m.topic}  {payload}")
    typer.echo(f"{len(batch.readings)} readings, {len(batch.quarantine)} quarantined payloads")
