"""`pantau report availability`: the evaluation report from a terminal, as a table, CSV, HTML."""

from __future__ import annotations

import asyncio
import enum
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from devices.outages import availability, report
from devices.readings import parse_time
from devices.registry import Invalid
from pantau import cliapp, db
from pantau.cliapp import WIB
from pantau.errors import ConfigError

app = typer.Typer(help="Reports for the regent's office: availability.", no_args_is_help=True)


class By(enum.StrEnum):
    pillar = "pillar"
    kecamatan = "kecamatan"
    type = "type"


_WHEN = "YYYY-MM-DD (00.00 WIB that day) or ISO 8601 with an offset"


@app.command("availability")
def availability_(
    start: Annotated[str, typer.Option("--from", help=f"the period's start: {_WHEN}")],
    end: Annotated[
        str,
        typer.Option(
            "--to", help=f"its end, not included (--to 2026-12-01: up to 30 Nov): {_WHEN}"
        ),
    ],
    by: Annotated[By, typer.Option(help="group by pillar, kecamatan or device type")] = By.pillar,
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="write every device's figures")
    ] = None,
    html_file: Annotated[
        Path | None, typer.Option("--html", help="write the report as one self-contained HTML file")
    ] = None,
) -> None:
    """Availability over [--from, --to): per group, the worst devices, the outage timeline and
    the pillar coverage; time up over time expected, maintenance excluded (see the README)."""
    try:
        chosen = availability.period(
            parse_time("from", start, WIB), parse_time("to", end, WIB), datetime.now(UTC)
        )
    except Invalid as exc:
        raise ConfigError("; ".join(f"--{p.field}: {p.message}" for p in exc.problems)) from None
    settings = cliapp.settings(configure_logs=False)

    async def go() -> availability.Availability:
        async with await db.connect(settings.database, autocommit=True) as conn:
            return await availability.availability(conn, chosen, by.value)

    figures = asyncio.run(go())
    typer.echo(report.table(figures), nl=False)
    if csv_file is not None:
        csv_file.write_text(report.to_csv(figures), encoding="utf-8")
        typer.echo(f"CSV: {csv_file}")
    if html_file is not None:
        html_file.write_text(report.to_html(figures, datetime.now(UTC)), encoding="utf-8")
        typer.echo(f"HTML: {html_file}")
