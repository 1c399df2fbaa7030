"""The `pantau` command. Each domain adds its own sub-commands; errors are one line, no traceback,
exit code 2 for bad input or an unreachable dependency."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer

import devices
import grafana
import ingest
import streams
from pantau import __version__, cliapp
from pantau.cliapp import WIB
from pantau.errors import ConfigError, DatabaseUnavailable, PantauError
from pantau.settings import render_toml

app = typer.Typer(
    name="pantau",
    help="Pantau: telemetry ingestion for the smart-city command center.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema: migrations and their status.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML config file (default: ./pantau.toml, or $PANTAU_CONFIG)",
        show_default=False,
    ),
]


@app.callback()
def _root(
    config: ConfigOption = None,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit")] = False,
) -> None:
    if version:
        typer.echo(f"pantau {__version__}")
        raise typer.Exit()
    cliapp.state.config = config


@config_app.command("check")
def config_check(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of TOML")] = False,
) -> None:
    """Print the effective configuration (secrets redacted), or what is wrong with it; warn on
    stderr of what `pantau run` would warn of or refuse at start (the state directories)."""
    settings = cliapp.settings(configure_logs=False)
    from pantau import instance

    if untrusted := instance.untrusted_client_id(settings):
        typer.echo(f"warning: {untrusted}", err=True)
    try:
        instance.check_writable(settings)
    except ConfigError as exc:
        typer.echo(f"warning: `pantau run` would stop: {exc}", err=True)
    data = settings.redacted()
    if as_json:
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        typer.echo(render_toml(data), nl=False)


@config_app.command("reference")
def config_reference() -> None:
    """Print every setting with its environment variable, default and meaning (Markdown)."""
    from pantau.settings import reference_table

    typer.echo(reference_table(), nl=False)


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations (safe to re-run, and when several instances start at once)."""
    settings = cliapp.settings()

    async def go() -> list[str]:
        from pantau import db, migrate

        async with await db.connect(settings.database, autocommit=True) as conn:
            applied = await migrate.migrate(conn, settings.storage.backend)
            flavor = await migrate.current_flavor(conn)
        typer.echo(f"storage flavor: {flavor}")
        return [f"{m.version:04d}_{m.name}" for m in applied]

    applied = asyncio.run(go())
    typer.echo(
        f"applied: {', '.join(applied)}" if applied else "nothing to apply: schema is current"
    )


@db_app.command("status")
def db_status() -> None:
    """List every migration, whether and when (WIB) it was applied."""
    settings = cliapp.settings()

    async def go() -> list[tuple[str, str, str, str]]:
        from pantau import db, migrate

        async with await db.connect(settings.database, autocommit=True) as conn:
            rows = await migrate.status(conn)
        out = []
        for r in rows:
            when = (
                r.applied_at.astimezone(WIB).strftime("%Y-%m-%d %H:%M:%S WIB")
                if r.applied_at
                else "pending"
            )
            note = " (file changed since applied!)" if r.changed else ""
            out.append((f"{r.version:04d}", r.name, r.flavor or "-", when + note))
        return out

    rows = asyncio.run(go())
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(_STATUS_HEADER)]
    for row in [_STATUS_HEADER, *rows]:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    pending = sum(1 for r in rows if r[3] == "pending")
    typer.echo(f"{pending} pending" if pending else "schema is current")


_STATUS_HEADER = ("version", "name", "flavor", "applied")


token_app = typer.Typer(help="API tokens: create, list, revoke.", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option(help="operator (read), technician (devices) or admin")],
    name: Annotated[str, typer.Option(help="who or what holds it, e.g. 'Budi, teknisi Setu'")],
    qr: Annotated[
        bool,
        typer.Option(
            "--qr",
            help="also print a sign-in link and its QR code: scanned with a phone, it opens "
            "the phone page signed in (with --wall: the wall's link)",
        ),
    ] = False,
    wall: Annotated[
        bool,
        typer.Option(
            "--wall",
            help="print the command-center wall's sign-in link (<address>/wall#token=...): "
            "opened once on the wall's PC, it keeps the token; needs --role operator",
        ),
    ] = False,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="Pantau's address in the link (default: http.public_url, else "
            "http://<http.host>:<http.port>)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Create an API token and print it (shown this once)."""
    from pantau import auth, db
    from pantau.errors import ConfigError

    auth.check_role(role)
    if wall and role != "operator":
        raise ConfigError(
            f"--wall with --role {role}: a wall only reads, and its PC keeps the token in the "
            "browser; expected --role operator"
        )
    settings = cliapp.settings()
    if wall:
        link_base = auth.wall_url(settings.http) if url is None else _page_url(url, "/wall")
    else:
        link_base = auth.phone_url(settings.http) if url is None else _page_url(url, "/m/")

    async def go() -> auth.CreatedToken:
        async with await db.connect(settings.database, autocommit=True) as conn:
            return await auth.create_token(conn, name, role, cliapp.actor())

    created = asyncio.run(go())
    typer.echo(f"token {created.id} ({created.role}) for {created.name}:")
    typer.echo(created.token)
    link = f"{link_base}#token={created.token}"
    if wall:
        typer.echo("")
        typer.echo(
            "Sign-in link for the wall (open it once on the wall's PC, in kiosk mode; the page "
            "keeps the token and takes it out of the address bar):"
        )
        typer.echo(link)
    if qr:
        import io

        import segno

        if not wall:
            typer.echo("")
            typer.echo("Sign-in link for the phone page (scan the code, or open the link):")
            typer.echo(link)
        out = io.StringIO()
        segno.make(link, error="m").terminal(out=out, compact=True)
        typer.echo(out.getvalue(), nl=False)
    if qr or wall:
        host = link_base.split("//", 1)[1].split("/", 1)[0]
        if host.startswith(("127.", "localhost", "[::1]")):
            typer.echo(
                f"note: {host} is this machine's own address; "
                + ("another PC" if wall else "a phone")
                + " needs the address it reaches Pantau at: set http.public_url or pass --url",
                err=True,
            )
    if (qr or wall) and (warning := auth.cleartext_warning(settings.http, link_base)):
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(
        f"Store it now: it is not shown again. Revoke with `pantau token revoke {created.id}`.",
        err=True,
    )


def _page_url(url: str, path: str) -> str:
    """`--url` as given (Pantau's address, or the page's own), ending in the page's path."""
    from pantau.errors import ConfigError

    page = "the wall's" if path == "/wall" else "the phone page's"
    if not url.startswith(("http://", "https://")) or "#" in url or " " in url:
        raise ConfigError(
            f"--url {url!r}: expected {page} address, e.g. http://192.168.1.20:8080{path}"
        )
    bare = path.rstrip("/")
    if url.endswith(path):
        return url
    if url.rstrip("/").endswith(bare):
        return url.rstrip("/") + path[len(bare) :]
    return url.rstrip("/") + path


@token_app.command("list")
def token_list() -> None:
    """List tokens (never the tokens themselves)."""
    from pantau import auth, db

    settings = cliapp.settings()

    async def go() -> list[auth.TokenInfo]:
        async with await db.connect(settings.database, autocommit=True) as conn:
            return await auth.list_tokens(conn)

    tokens = asyncio.run(go())
    typer.echo(f"{'id':>4}  {'role':<10}  {'state':<18}  {'last used':<30}  name")
    for t in tokens:
        state = f"revoked {t.revoked_at:%Y-%m-%d}" if t.revoked_at else "active"
        used = f"{t.last_used_at.astimezone(WIB):%Y-%m-%d %H:%M} WIB" if t.last_used_at else "never"
        typer.echo(f"{t.id:>4}  {t.role:<10}  {state:<18}  {used:<30}  {t.name}")
    if not tokens:
        typer.echo("no tokens yet: pantau token create --role ... --name ...")


@token_app.command("revoke")
def token_revoke(token_id: Annotated[int, typer.Argument(help="the token's number")]) -> None:
    """Revoke a token: it stops working at once."""
    from pantau import auth, db
    from pantau.errors import ConfigError

    settings = cliapp.settings()

    async def go() -> bool:
        async with await db.connect(settings.database, autocommit=True) as conn:
            return await auth.revoke_token(conn, token_id, cliapp.actor())

    if not asyncio.run(go()):
        raise ConfigError(f"no active token {token_id}: expected a number from `pantau token list`")
    typer.echo(f"token {token_id} revoked")


@app.command("run")
def run() -> None:
    """Run the service against the configured PostgreSQL and MQTT broker."""
    settings = cliapp.settings()
    from pantau import service

    asyncio.run(service.run(settings))


@app.command("dev")
def dev() -> None:
    """Run the embedded default: Pantau with its own PostgreSQL and Mosquitto under var/."""
    settings = cliapp.settings()
    from pantau import service
    from pantau.dev import ADMIN_USER, DevStack, activate_hint, cli_command
    from pantau.embedded import free_port, port_is_free

    stack = DevStack(settings.embedded)
    typer.echo(
        ("Reusing" if stack.reused else "Creating")
        + f" the embedded PostgreSQL and Mosquitto in {stack.var_dir} ..."
    )
    with stack:
        effective = stack.apply(settings)
        token = asyncio.run(stack.dev_token(effective))
        wall_token = asyncio.run(stack.wall_token(effective)) if token else None
        if effective.http.port and not port_is_free(effective.http.port, effective.http.host):
            port = free_port(effective.http.host)
            typer.echo(f"HTTP port {effective.http.port} is taken; using {port} instead")
            effective = effective.model_copy(
                update={"http": effective.http.model_copy(update={"port": port})}
            )
        client_config = stack.write_client_config(effective)
        from ingest.simulator import build_devices, report_interval_seconds

        simulated = build_devices(settings.embedded.simulate_devices)
        interval = report_interval_seconds(simulated, settings.embedded.simulate_rate)
        try:
            made, changed, retired = asyncio.run(
                stack.register_simulated(effective, simulated, interval)
            )
        except DatabaseUnavailable as exc:  # Pantau starts anyway and spools
            typer.echo(f"Simulated sensors: not registered ({exc})", err=True)
        else:
            if simulated:
                typer.echo(
                    f"Simulated sensors: {len(simulated)} registered devices ({made} new, "
                    f"{changed} updated, {retired} retired), each reporting every {interval} s"
                )
            elif retired:
                typer.echo(f"Simulator off: its {retired} devices retired")

        from pantau.dev import build_cameras

        cameras = build_cameras(settings.embedded.simulate_cameras) if stack.cameras else []
        if stack.cameras_missing:
            typer.echo(f"Test cameras: none ({stack.cameras_missing})", err=True)
        elif cameras:
            try:
                made, changed, retired = asyncio.run(stack.register_cameras(effective, cameras))
            except DatabaseUnavailable as exc:
                typer.echo(f"Test cameras: not registered ({exc})", err=True)
            else:
                typer.echo(
                    f"Test cameras: {len(cameras)} registered devices ({made} new, {changed} "
                    f"updated, {retired} retired)"
                )

        def banner(started: service.Started) -> None:
            url = started.http_url
            if not effective.http.port:  # any free port: the clients' config gets the real one
                port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
                http = effective.http.model_copy(update={"port": port})
                stack.write_client_config(effective.model_copy(update={"http": http}))
            pg = stack.postgres
            lines = [
                "",
                f"Pantau {__version__} is running (embedded stack in {stack.var_dir})",
                f"  Phone page   {url}/m/",
                f"  Wall         {url}/wall#token={wall_token}  (operator; open it once on the "
                "wall's PC)"
                if wall_token
                else "  Wall         none yet: the database was down; start again once it is up",
                f"  API token    {token}  (admin; kept in {stack.var_dir / 'secrets'})"
                if token
                else "  API token    none yet: the database was down; start again once it is up",
                f"  API docs     {url}/docs",
                f"  Readiness    {url}/readyz",
                f"  Metrics      {url}/metrics",
                f"  PostgreSQL   psql '{pg.dsn()}'",
                f"  MQTT broker  mosquitto_sub -h 127.0.0.1 -p {stack.mosquitto.port} -t '#' -v "
                f'-u {ADMIN_USER} -P "$(cat {stack.var_dir / "secrets" / "mqtt-pantau-admin"})"',
                f"  Simulator    {settings.embedded.simulate_devices} sensors, "
                f"{settings.embedded.simulate_rate:g} messages/s "
                "(PANTAU_EMBEDDED__SIMULATE_DEVICES=0 turns it off)",
                "               now and then a sensor falls silent, a kecamatan goes dark, a "
                "river rises over Siaga 3 (PANTAU_EMBEDDED__SIMULATE_INCIDENTS=false: never)"
                if settings.embedded.simulate_incidents
                else "               incidents off",
                f"  Cameras      {len(cameras)} test cameras on rtsp://127.0.0.1:"
                f"{stack.cameras.port}/ ({', '.join(sorted({c.mount for c in cameras}))}; "
                "PANTAU_EMBEDDED__SIMULATE_CAMERAS=0 turns them off)"
                if stack.cameras and cameras
                else "  Cameras      none"
                + (" (GStreamer missing, see above)" if stack.cameras_missing else ""),
                f"  Logs         {stack.var_dir / 'log'} and {stack.mosquitto.log_file}",
                f"  CLI          {cli_command(client_config)} devices list",
                f"               (or: {activate_hint(client_config)}; pantau devices list)",
                "Press Ctrl-C to stop.",
                "",
            ]
            typer.echo("\n".join(lines))

        extra = []
        if simulated:
            import time

            from ingest.simulator import Incidents, Simulator
            from pantau.dev import SIMULATOR_USER

            simulator = Simulator(
                simulated,
                host="127.0.0.1",
                port=stack.mosquitto.port,
                rate=settings.embedded.simulate_rate,
                username=SIMULATOR_USER,
                password=stack.simulator_password,
                incidents=Incidents.from_settings(settings.embedded, simulated, time.time())
                if settings.embedded.simulate_incidents
                else None,
            )
            extra.append(simulator.worker())
        asyncio.run(service.run(effective, on_started=banner, extra_workers=extra))
    typer.echo("Pantau stopped; data kept in " + str(stack.var_dir))


for _domain in (ingest, devices, streams, grafana):
    _domain.register_cli(app)


def main() -> None:
    try:
        app()
    except PantauError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
