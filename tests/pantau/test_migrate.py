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


async def test_backend_cannot_change_after_setup(database_url: str) -> None:
    async with await connect(database_url) as conn:
        await migrate.migrate(conn, "plain")
        with pytest.raises(MigrationError, match="set up for 'plain'"):
            await migrate.migrate(conn, "timescale")


def test_every_migration_has_sql_for_both_flavors() -> None:
    for migration in migrate.shipped_migrations():
        for flavor in migrate.FLAVORS:
            assert migration.script(flavor).strip(), (migration.name, flavor)
