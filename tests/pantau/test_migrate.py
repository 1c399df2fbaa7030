import asyncio

import psycopg
import pytest

from pantau import migrate
from pantau.errors import MigrationError
from pantau.migrate import Migration


async def connect(url: str) -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(url, autocommit=True)


async def test_fresh_database_gets_the_plain_schema(database_url: str) -> None:
    async with await connect(database_url) as conn:
        applied = await migrate.migrate(conn)
        assert [m.version for m in applied] == [m.version for m in migrate.shipped_migrations()]
        assert await migrate.current_flavor(conn) == "plain"  # no TimescaleDB on this machine
        cur = await conn.execute(
            "SELECT relname, relkind FROM pg_class"
            " WHERE relname IN ('readings', 'readings_1m', 'readings_1h') ORDER BY relname"
        )
        assert await cur.fetchall() == [
            ("readings", "p"),  # partitioned
            ("readings_1h", "r"),
            ("readings_1m", "p"),
        ]


async def test_second_run_applies_nothing(database_url: str) -> None:
    async with await connect(database_url) as conn:
        await migrate.migrate(conn)
        first = await migrate.applied_migrations(conn)
        assert await migrate.migrate(conn) == []
        assert await migrate.applied_migrations(conn) == first
        assert await migrate.pending(conn) == []
        assert all(row.applied_at and not row.changed for row in await migrate.status(conn))


async def test_two_instances_migrating_at_once(database_url: str) -> None:
    conns = [await connect(database_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate.migrate(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    # Exactly one of them applied each migration; the others found nothing to do.
    applied = sorted(m.version for result in results for m in result)
    assert applied == [m.version for m in migrate.shipped_migrations()]
    async with await connect(database_url) as conn:
        cur = await conn.execute("SELECT count(*) FROM pantau_migrations")
        assert (await cur.fetchone()) == (len(migrate.shipped_migrations()),)


async def test_a_changed_migration_is_refused(database_url: str) -> None:
    async with await connect(database_url) as conn:
        await migrate.migrate(conn)
        await conn.execute("UPDATE pantau_migrations SET checksum = 'edited' WHERE version = 1")
        with pytest.raises(MigrationError, match="was changed after it was applied"):
            await migrate.migrate(conn)
        assert any(row.changed for row in await migrate.status(conn))


async def test_a_failing_migration_rolls_back_and_names_itself(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = migrate.shipped_migrations()
    broken = Migration(
        999, "broken", {"": "CREATE TABLE half_done (x int);\nSELECT no_such_function();"}
    )
    monkeypatch.setattr(migrate, "shipped_migrations", lambda: (*shipped, broken))
    async with await connect(database_url) as conn:
        with pytest.raises(
            MigrationError, match=r"migration 0999_broken failed and was rolled back"
        ):
            await migrate.migrate(conn)
        cur = await conn.execute(
            "SELECT to_regclass('half_done'), max(version) FROM pantau_migrations"
        )
        assert await cur.fetchone() == (None, shipped[-1].version)
        # The lock was released: a later run (after the fix) proceeds.
        monkeypatch.setattr(migrate, "shipped_migrations", lambda: shipped)
        assert await migrate.migrate(conn) == []


async def test_timescale_required_but_missing(database_url: str) -> None:
    async with await connect(database_url) as conn:
        with pytest.raises(MigrationError, match="timescaledb extension cannot be created"):
            await migrate.migrate(conn, "timescale")
        assert await migrate.applied_migrations(conn) == []


@pytest.mark.parametrize(
    ("row", "missing"),
    [
        ((True, False, "pg_stat_statements", None), True),
        ((True, False, "", None), True),
        ((True, False, "timescaledb", None), False),
        ((True, False, '"$libdir/timescaledb", pg_stat_statements', None), False),
        ((True, False, "pg_stat_statements, timescaledb-2.28.3", None), False),
        ((True, False, "pg_stat_statements", "on"), False),  # allow_install_without_preload
        ((True, False, None, None), False),  # may not read the setting: CREATE tells
        ((True, True, "", None), False),  # created already
        ((False, False, "", None), False),  # not installed: plain, as on this machine
    ],
)
def test_preload_missing(row: tuple[bool, bool, str | None, str | None], missing: bool) -> None:
    assert migrate.preload_missing(*row) is missing


# TimescaleDB cannot be installed on this machine (no build for PostgreSQL 15 here), so these two
# replace what the database answers about it; the connection, the lock and the errors are real.
async def test_installed_but_not_preloaded_stops_with_the_fix(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        migrate, "_TIMESCALE_SETUP", "SELECT true, false, 'pg_stat_statements'::text, NULL::text"
    )
    async with await connect(database_url) as conn:
        with pytest.raises(MigrationError, match="add 'timescaledb' to shared_preload_libraries"):
            await migrate.migrate(conn)
        assert not conn.closed  # told before CREATE EXTENSION could end the session
        assert await migrate.applied_migrations(conn) == []
        monkeypatch.undo()
        assert await migrate.migrate(conn, "plain")  # the lock was released


async def test_a_session_ended_by_create_extension_stops_with_the_fix(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user who may not read shared_preload_libraries learns it from the loader's FATAL, which
    ends the session: here a FATAL of PostgreSQL's own in place of CREATE EXTENSION's."""
    monkeypatch.setattr(migrate, "_TIMESCALE_SETUP", "SELECT true, false, NULL::text, NULL::text")
    monkeypatch.setattr(
        migrate, "_CREATE_TIMESCALE", "SELECT pg_terminate_backend(pg_backend_pid())"
    )
    async with await connect(database_url) as conn:
        with pytest.raises(MigrationError, match=r"not preloaded.*terminating connection"):
            await migrate.migrate(conn)
        assert conn.closed
    async with await connect(database_url) as conn:
        assert await migrate.applied_migrations(conn) == []


async def test_backend_cannot_change_after_setup(database_url: str) -> None:
    async with await connect(database_url) as conn:
        await migrate.migrate(conn, "plain")
        with pytest.raises(MigrationError, match="set up for 'plain'"):
            await migrate.migrate(conn, "timescale")


def test_every_migration_has_sql_for_both_flavors() -> None:
    for migration in migrate.shipped_migrations():
        for flavor in migrate.FLAVORS:
            assert migration.script(flavor).strip(), (migration.name, flavor)
