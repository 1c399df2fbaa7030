"""Ordered SQL migrations, applied once, recorded in `pantau_migrations`, safe to run concurrently.

A migration is `NNNN_name.sql` (every storage flavor) and/or `NNNN_name.plain.sql` /
`NNNN_name.timescale.sql` (one flavor), all in `pantau/migrations/`. The flavor is chosen once,
when the first migration is applied (TimescaleDB when the extension can be created, unless
`storage.backend` says otherwise), and recorded with every migration.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Literal

import psycopg

from pantau.errors import MigrationError

log = logging.getLogger(__name__)

Flavor = Literal["plain", "timescale"]
FLAVORS: tuple[Flavor, ...] = ("plain", "timescale")
# Session advisory lock held while migrating, so two instances starting at once take turns.
MIGRATION_LOCK_KEY = 0x70616E746175  # "pantau"
_FILE_RE = re.compile(
    r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)(?:\.(?P<flavor>plain|timescale))?\.sql$"
)

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS pantau_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    flavor     text        NOT NULL CHECK (flavor IN ('plain', 'timescale')),
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    # SQL text per flavor key: "" for every flavor, else "plain" / "timescale".
    parts: dict[str, str] = field(default_factory=dict)

    def script(self, flavor: Flavor) -> str:
        return "\n".join(p for key in ("", flavor) if (p := self.parts.get(key)))

    def checksum(self, flavor: Flavor) -> str:
        return hashlib.sha256(self.script(flavor).encode()).hexdigest()


@dataclass(frozen=True)
class AppliedMigration:
    version: int
    name: str
    flavor: Flavor
    checksum: str
    applied_at: datetime


@dataclass(frozen=True)
class StatusRow:
    version: int
    name: str
    applied_at: datetime | None
    flavor: str | None
    changed: bool  # applied, but the shipped file differs from what was applied


@cache
def shipped_migrations() -> tuple[Migration, ...]:
    """The migrations shipped in the package, in order."""
    found: dict[int, Migration] = {}
    for entry in resources.files("pantau.migrations").iterdir():
        match = _FILE_RE.match(entry.name)
        if not match:
            continue
        version = int(match["version"])
        migration = found.setdefault(version, Migration(version, match["name"]))
        if migration.name != match["name"]:
            raise MigrationError(
                f"migration {version:04d} has two names: {migration.name} and {match['name']}"
            )
        migration.parts[match["flavor"] or ""] = entry.read_text(encoding="utf-8")
    return tuple(found[v] for v in sorted(found))


async def applied_migrations(conn: psycopg.AsyncConnection) -> list[AppliedMigration]:
    exists = await (await conn.execute("SELECT to_regclass('pantau_migrations')")).fetchone()
    if not exists or exists[0] is None:
        return []
    cur = await conn.execute(
        "SELECT version, name, flavor, checksum, applied_at FROM pantau_migrations ORDER BY version"
    )
    return [AppliedMigration(*row) for row in await cur.fetchall()]


async def status(conn: psycopg.AsyncConnection) -> list[StatusRow]:
    """Every shipped or recorded migration with whether and when it was applied."""
    applied = {m.version: m for m in await applied_migrations(conn)}
    rows = []
    for migration in shipped_migrations():
        done = applied.pop(migration.version, None)
        rows.append(
            StatusRow(
                migration.version,
                migration.name,
                done.applied_at if done else None,
                done.flavor if done else None,
                bool(done and done.checksum != migration.checksum(done.flavor)),
            )
        )
    for unknown in applied.values():  # applied by a newer Pantau
        rows.append(
            StatusRow(unknown.version, unknown.name, unknown.applied_at, unknown.flavor, False)
        )
    return sorted(rows, key=lambda r: r.version)


async def pending(conn: psycopg.AsyncConnection) -> list[Migration]:
    done = {m.version for m in await applied_migrations(conn)}
    return [m for m in shipped_migrations() if m.version not in done]


async def current_flavor(conn: psycopg.AsyncConnection) -> Flavor | None:
    applied = await applied_migrations(conn)
    return applied[0].flavor if applied else None


async def migrate(conn: psycopg.AsyncConnection, backend: str = "auto") -> list[Migration]:
    """Apply pending migrations; return those applied. `conn` must be in autocommit mode."""
    if not conn.autocommit:
        raise MigrationError("migrate() needs an autocommit connection")
    await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
    try:
        await conn.execute(_CREATE_TABLE)
        flavor = await current_flavor(conn)
        if flavor is None:
            flavor = await _choose_flavor(conn, backend)
        elif backend != "auto" and backend != flavor:
            raise MigrationError(
                f"storage.backend = {backend!r}, but this database was set up for {flavor!r}; "
                f"expected {flavor!r} or 'auto'"
            )
        _check_unchanged(await applied_migrations(conn), flavor)
        todo = await pending(conn)
        for migration in todo:
            await _apply(conn, migration, flavor)
        return todo
    finally:
        if not conn.closed:  # closed, the session's lock went with it
            await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))


def _check_unchanged(applied: list[AppliedMigration], flavor: Flavor) -> None:
    shipped = {m.version: m for m in shipped_migrations()}
    for done in applied:
        migration = shipped.get(done.version)
        if migration and migration.checksum(flavor) != done.checksum:
            raise MigrationError(
                f"migration {done.version:04d}_{done.name} was changed after it was applied; "
                "expected shipped migrations to stay as applied: add a new migration instead"
            )


# TimescaleDB's loader must be in shared_preload_libraries: without it, CREATE EXTENSION ends the
# session with FATAL "must be preloaded" (unless timescaledb.allow_install_without_preload), and
# a closed connection reads as "database down" again and again. Who may read the setting (a
# superuser or pg_read_all_settings) is told before trying; others learn it from the FATAL.
_TIMESCALE_SETUP = """
SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),
       EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'),
       CASE WHEN pg_has_role('pg_read_all_settings', 'USAGE')
            THEN current_setting('shared_preload_libraries') END,
       current_setting('timescaledb.allow_install_without_preload', true)
"""
_CREATE_TIMESCALE = "CREATE EXTENSION IF NOT EXISTS timescaledb"
NOT_PRELOADED = (
    "TimescaleDB is installed but not preloaded: add 'timescaledb' to shared_preload_libraries "
    "in postgresql.conf and restart PostgreSQL, or set storage.backend = 'plain'"
)


def preload_missing(
    available: bool, created: bool, preload: str | None, allow_without: str | None
) -> bool:
    """Whether CREATE EXTENSION timescaledb would end the session (see _TIMESCALE_SETUP);
    `preload` is None when this user may not read shared_preload_libraries."""
    if not available or created or preload is None or allow_without == "on":
        return False
    libraries = (lib.strip().strip('"').rsplit("/", 1)[-1] for lib in preload.split(","))
    return not any(lib.startswith("timescaledb") for lib in libraries)


async def _choose_flavor(conn: psycopg.AsyncConnection, backend: str) -> Flavor:
    if backend == "plain":
        return "plain"
    cur = await conn.execute(_TIMESCALE_SETUP)
    row = await cur.fetchone()
    if row and preload_missing(*row):
        raise MigrationError(NOT_PRELOADED)
    try:
        async with conn.transaction():
            await conn.execute(_CREATE_TIMESCALE)
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())
        if conn.closed:  # FATAL: the loader is not preloaded (a user who could not tell before)
            raise MigrationError(f"{NOT_PRELOADED} ({reason})") from None
        if backend == "timescale":
            raise MigrationError(
                f"storage.backend = 'timescale' but the timescaledb extension cannot be created: "
                f"{reason}"
            ) from None
        log.info("TimescaleDB not available (%s); using plain PostgreSQL partitions", reason)
        return "plain"
    log.info("TimescaleDB extension available; using hypertables")
    return "timescale"


async def _apply(conn: psycopg.AsyncConnection, migration: Migration, flavor: Flavor) -> None:
    label = f"{migration.version:04d}_{migration.name}"
    log.info("applying migration %s (%s)", label, flavor)
    try:
        async with conn.transaction():
            await conn.execute(migration.script(flavor).encode())
            await conn.execute(
                "INSERT INTO pantau_migrations (version, name, flavor, checksum)"
                " VALUES (%s, %s, %s, %s)",
                (migration.version, migration.name, flavor, migration.checksum(flavor)),
            )
    except (psycopg.OperationalError, psycopg.InterfaceError):
        raise  # the connection was lost: the database is down, not the migration wrong
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())
        raise MigrationError(f"migration {label} failed and was rolled back: {reason}") from None
