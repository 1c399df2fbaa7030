"""`pantau wall ...`: the cameras' snapshot links of the wall and of Grafana (capability URLs:
whoever has one sees that camera's picture, no token needed), and rotating their keys."""

from __future__ import annotations

import asyncio
from typing import Annotated

import psycopg
import typer
from psycopg.types.json import Jsonb

from pantau import auth, cliapp, db
from pantau.errors import ConfigError

app = typer.Typer(
    help="The command-center wall (/wall): the cameras' snapshot links and their keys.",
    no_args_is_help=True,
)

_LINKS = """
SELECT c.device_id, coalesce(d.name, c.device_id),
       '/wall/cameras/' || c.device_id || '/snapshot.jpg?key=' || c.snapshot_key
FROM cameras c JOIN devices d ON d.device_id = c.device_id
WHERE d.status <> 'retired' AND (%(camera)s::text IS NULL OR c.device_id = %(camera)s)
ORDER BY c.device_id
"""


def _links(rows: list[tuple[str, str, str]], base: str) -> None:
    for device_id, name, path in rows:
        typer.echo(f"{device_id}  {base}{path}  ({name})")


@app.command("links")
def links(
    camera: Annotated[
        str | None, typer.Argument(help="one camera's id (default: every camera)")
    ] = None,
) -> None:
    """Each camera's snapshot link (what wall.camera_tiles.snapshot_path gives, with Pantau's
    address): the picture, or the placeholder saying why there is none."""
    settings = cliapp.settings(configure_logs=False)

    async def go() -> list[tuple[str, str, str]]:
        async with await db.connect(settings.database, autocommit=True) as conn:
            cur = await conn.execute(_LINKS, {"camera": camera})
            return await cur.fetchall()

    rows = asyncio.run(go())
    if camera and not rows:
        raise ConfigError(
            f"{camera!r} is not a camera in use: expected an id from `pantau wall links`"
        )
    _links(rows, auth.base_url(settings.http))
    if not rows:
        typer.echo("no cameras yet: pantau devices add --type camera ..., pantau cameras set ...")


@app.command("rotate-key")
def rotate_key(
    camera: Annotated[str | None, typer.Argument(help="the camera whose link to replace")] = None,
    every: Annotated[
        bool, typer.Option("--all", help="replace every camera's link (a leaked dashboard)")
    ] = False,
) -> None:
    """A new snapshot key: the old link stops working at once (a Grafana panel or wall reading
    wall.camera_tiles picks up the new one by itself). Audited."""
    if (camera is None) == (not every):
        raise ConfigError("expected a camera's id or --all (not both)")
    settings = cliapp.settings(configure_logs=False)
    actor = cliapp.actor()

    async def go() -> list[tuple[str, str, str]]:
        async with await db.connect(settings.database, autocommit=True) as conn:
            async with conn.transaction():
                rotated = await _rotate(conn, camera, actor)
            if camera and not rotated:
                return []
            cur = await conn.execute(_LINKS, {"camera": camera})
            return await cur.fetchall()

    rows = asyncio.run(go())
    if camera and not rows:
        raise ConfigError(
            f"{camera!r} is not a camera in use: expected an id from `pantau wall links`"
        )
    typer.echo(
        f"{len(rows)} new link{'s' if len(rows) != 1 else ''} (the old ones no longer work):"
    )
    _links(rows, auth.base_url(settings.http))


def _not_a_camera(camera: str) -> ConfigError:
    return ConfigError(f"{camera!r} is not a camera in use: expected one of `pantau wall links`")


async def _rotate(conn: psycopg.AsyncConnection, camera: str | None, actor: str) -> list[str]:
    cur = await conn.execute(
        "UPDATE cameras c SET snapshot_key = replace(gen_random_uuid()::text, '-', '')"
        " FROM devices d WHERE d.device_id = c.device_id AND d.status <> 'retired'"
        " AND (%(camera)s::text IS NULL OR c.device_id = %(camera)s) RETURNING c.device_id",
        {"camera": camera},
    )
    rotated = sorted(str(row[0]) for row in await cur.fetchall())
    async with conn.cursor() as audit:
        await audit.executemany(
            "INSERT INTO audit_log (actor, action, entity, entity_id, after)"
            " VALUES (%s, 'rotate-snapshot-key', 'camera', %s, %s)",
            [(actor, device_id, Jsonb({"snapshot_key": "***"})) for device_id in rotated],
        )
    return rotated
