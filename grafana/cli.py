"""`pantau grafana ...`: export the dashboards, data sources and playlist as files, publish them
to a running Grafana, and create the PostgreSQL login Grafana reads the wall views with."""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from pantau import cliapp
from pantau.errors import ConfigError

app = typer.Typer(
    help="Grafana as code: export the wall's dashboards, publish them, the data source's login.",
    no_args_is_help=True,
)


@app.command("export")
def export_command(
    directory: Annotated[Path, typer.Argument(help="where to write (created if missing)")],
) -> None:
    """Write the dashboards, the provisioning files and the playlist (same input, same bytes)."""
    from grafana import export

    settings = cliapp.settings()
    bundle = export.bundle(settings)
    written = export.write(directory, bundle.files)
    for warning in bundle.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(
        f"{len(bundle.files)} files in {directory} ({len(written)} changed): "
        f"mount {directory / 'provisioning'} as Grafana's provisioning folder and "
        f"{directory / export.DASHBOARDS} at {settings.grafana.dashboards_path}; "
        f"`pantau grafana publish` creates the playlist"
    )


@app.command("publish")
def publish_command(
    url: Annotated[
        str | None,
        typer.Option("--url", help="Grafana's address (default: grafana.url)", show_default=False),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            help="a file holding a Grafana service account token (default: the environment's "
            "PANTAU_GRAFANA__TOKEN); never the token itself on the command line, where ps and "
            "the shell's history would keep it",
            show_default=False,
        ),
    ] = None,
    playlist_only: Annotated[
        bool,
        typer.Option(
            "--playlist-only",
            help="push only the playlist (when the dashboards are provisioned from files)",
        ),
    ] = False,
) -> None:
    """Push the folder, the dashboards (overwritten in place, stable uids) and the kiosk
    playlist to a running Grafana; running it again updates the same objects."""
    from grafana import export, provisioning
    from grafana import publish as pub

    settings = cliapp.settings()
    target_url = url or settings.grafana.url
    if not target_url:
        raise ConfigError("no Grafana to publish to: expected --url URL or grafana.url")
    token = _token(token_file, settings.grafana.token)
    bundle = export.bundle(settings)
    for warning in bundle.warnings:
        typer.echo(f"warning: {warning}", err=True)
    dashboards = [
        json.loads(content)
        for name, content in bundle.files.items()
        if name.startswith(f"{export.DASHBOARDS}/")
    ]
    report = pub.publish(
        pub.Target(target_url.rstrip("/"), token, settings.grafana.timeout_seconds),
        folder=json.loads(export.to_json(provisioning.folder())),
        dashboards=dashboards,
        playlist=json.loads(bundle.files[export.PLAYLIST]),
        include_dashboards=not playlist_only,
    )
    for line in report.lines:
        typer.echo(line)
    typer.echo(f"kiosk: {target_url.rstrip('/')}/playlists/play/{provisioning.PLAYLIST_UID}?kiosk")


def _token(token_file: Path | None, from_settings: object) -> str:
    from pydantic import SecretStr

    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"--token-file {token_file}: cannot read it ({exc.strerror}); expected a file "
                "holding a Grafana service account token"
            ) from None
        if not token or "\n" in token:
            raise ConfigError(f"--token-file {token_file}: expected one token on one line")
        return token
    if isinstance(from_settings, SecretStr) and from_settings.get_secret_value().strip():
        return from_settings.get_secret_value().strip()
    raise ConfigError(
        "no Grafana token: expected --token-file FILE or the environment variable "
        "PANTAU_GRAFANA__TOKEN (a service account token with the Editor role)"
    )


@app.command("db-role")
def db_role_command(
    name: Annotated[str, typer.Argument(help="the login role to create, e.g. grafana_wall")],
    password_file: Annotated[
        Path | None,
        typer.Option(
            "--password-file",
            help="a file holding its password (default: read from standard input, or asked "
            "twice on a terminal); never on the command line",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Create a PostgreSQL login that is a member of pantau_wall, for Grafana's data source
    (or change the password of one this command created)."""
    from grafana import dbrole
    from pantau import db

    dbrole.check_name(name)
    password = _password(password_file)
    dbrole.check_password(password)
    settings = cliapp.settings()

    async def go() -> dbrole.Outcome:
        async with await db.connect(settings.database, autocommit=True) as conn:
            return await dbrole.create_or_update(conn, name, password)

    outcome = asyncio.run(go())
    verb = "created" if outcome.created else "password changed"
    typer.echo(
        f"role {outcome.name}: {verb} (LOGIN, member of {dbrole.WALL_ROLE}, statement_timeout "
        f"{dbrole.STATEMENT_TIMEOUT}); give Grafana GRAFANA_PANTAU_DB_USER={outcome.name} and "
        "the password as GRAFANA_PANTAU_DB_PASSWORD"
    )


def _password(password_file: Path | None) -> str:
    if password_file is not None:
        try:
            return password_file.read_text().rstrip("\n")
        except OSError as exc:
            raise ConfigError(
                f"--password-file {password_file}: cannot read it ({exc.strerror})"
            ) from None
    if sys.stdin.isatty():
        first = getpass.getpass("password for the Grafana login: ")
        if getpass.getpass("again: ") != first:
            raise ConfigError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")
