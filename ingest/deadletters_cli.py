"""`pantau quarantine dead-letters`: list, show and replay what the spool set aside."""

from __future__ import annotations

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
    """Spool records set aside in <spool_dir>/dead: refused on replay, or corrupt."""
    settings = cliapp.settings()
    letters = DeadLetters(settings.ingest.spool_dir / "dead")
    entries = letters.entries()
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
            report = replay(letters, writer, registry=registry)
        except DatabaseDown as exc:
            raise DatabaseUnavailable(f"database down: {exc}") from None
        finally:
            writer.close()
        typer.echo(f"replayed {len(report.replayed)} ({report.readings} new readings)")
        for name, error in report.failed.items():
            typer.echo(f"still refused: {name}: {error}")
        if report.corrupt:
            typer.echo(f"corrupt, kept for inspection: {', '.join(report.corrupt)}")
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
    typer.echo(f"{len(entries)} dead letters ({size} bytes) in {letters.directory}")


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
