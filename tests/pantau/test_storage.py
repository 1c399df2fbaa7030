from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest

from pantau import migrate
from pantau.settings import StorageSettings
from pantau.storage import PlainStorage, storage_for

TODAY = date(2026, 11, 24)


@pytest.fixture
async def conn(database_url: str):  # type: ignore[no-untyped-def]
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await migrate.migrate(conn, "plain")
        yield conn


async def partitions(conn: psycopg.AsyncConnection, parent: str) -> list[str]:
    cur = await conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %s::regclass ORDER BY 1",
        (parent,),
    )
    return [r[0] for r in await cur.fetchall()]


async def test_partitions_created_ahead_and_behind(conn: psycopg.AsyncConnection) -> None:
    storage = PlainStorage(StorageSettings(partitions_ahead_days=2, partitions_behind_days=1))
    report = await storage.maintain(conn, TODAY)
    expected = [
        "readings_p20261123",
        "readings_p20261124",
        "readings_p20261125",
        "readings_p20261126",
    ]
    assert await partitions(conn, "readings") == expected
    assert report.created == 8  # readings and readings_1m
    again = await storage.maintain(conn, TODAY)
    assert again.created == 0


async def test_day_boundaries_are_utc(conn: psycopg.AsyncConnection) -> None:
    await PlainStorage(StorageSettings(partitions_behind_days=0)).maintain(conn, TODAY)
    # 23:59:59 UTC on the 24th is 06:59:59 WIB on the 25th; it belongs to the 24th's partition.
    at = datetime(2026, 11, 24, 23, 59, 59, tzinfo=UTC)
    await conn.execute("INSERT INTO readings VALUES (%s, 'wl-001', 'water_level_cm', 120.5)", (at,))
    cur = await conn.execute("SELECT tableoid::regclass::text FROM readings")
    assert await cur.fetchone() == ("readings_p20261124",)


async def test_retention_drops_whole_old_days(conn: psycopg.AsyncConnection) -> None:
    await conn.execute("SELECT pantau_ensure_partitions('readings', '2026-10-01', '2026-10-03')")
    await conn.execute(
        "INSERT INTO readings VALUES ('2026-10-02 12:00+00', 'wl-001', 'water_level_cm', 1)"
    )
    storage = PlainStorage(StorageSettings(retention_days=53, partitions_behind_days=0))
    report = await storage.maintain(conn, TODAY)  # keeps from 2026-10-02 on
    remaining = await partitions(conn, "readings")
    assert "readings_p20261001" not in remaining
    assert "readings_p20261002" in remaining
    assert report.dropped == 1
    cur = await conn.execute("SELECT count(*) FROM readings")
    assert await cur.fetchone() == (1,)


async def test_duplicate_readings_are_one_row(conn: psycopg.AsyncConnection) -> None:
    await PlainStorage(StorageSettings()).maintain(conn, datetime.now(UTC).date())
    at = datetime.now(UTC).replace(microsecond=0)
    for _ in range(2):
        await conn.execute(
            "INSERT INTO readings VALUES (%s, 'aq-007', 'pm25', 41.0) ON CONFLICT DO NOTHING",
            (at,),
        )
    with pytest.raises(psycopg.errors.UniqueViolation):
        await conn.execute("INSERT INTO readings VALUES (%s, 'aq-007', 'pm25', 42.0)", (at,))
    cur = await conn.execute("SELECT count(*), max(value) FROM readings")
    assert await cur.fetchone() == (1, 41.0)


async def test_rollups_minute_and_hour(conn: psycopg.AsyncConnection) -> None:
    storage = PlainStorage(StorageSettings(rollup_lookback_minutes=120))
    now = datetime(2026, 11, 24, 10, 30, 30, tzinfo=UTC)
    await storage.maintain(conn, now.date())
    base = datetime(2026, 11, 24, 9, 59, 0, tzinfo=UTC)
    rows = [
        (base, 10.0),
        (base + timedelta(seconds=30), 20.0),  # same minute as the first
        (base + timedelta(minutes=1), 40.0),  # 10:00, the next hour
        (base + timedelta(minutes=1, seconds=10), 50.0),
        (base + timedelta(minutes=1, seconds=20), 60.0),
    ]
    async with conn.cursor() as cur:
        await cur.executemany("INSERT INTO readings VALUES (%s, 'rg-003', 'rain_mm', %s)", rows)
    await storage.refresh_rollups(conn, now)
    cur = await conn.execute(
        "SELECT bucket, samples, avg, min, max FROM readings_1m ORDER BY bucket"
    )
    assert await cur.fetchall() == [
        (base, 2, 15.0, 10.0, 20.0),
        (base + timedelta(minutes=1), 3, 50.0, 40.0, 60.0),
    ]
    cur = await conn.execute(
        "SELECT bucket, samples, avg, min, max FROM readings_1h ORDER BY bucket"
    )
    assert await cur.fetchall() == [
        (datetime(2026, 11, 24, 9, tzinfo=UTC), 2, 15.0, 10.0, 20.0),
        (datetime(2026, 11, 24, 10, tzinfo=UTC), 3, 50.0, 40.0, 60.0),
    ]
    # A late reading in an already rolled-up minute is folded in by the next refresh.
    await conn.execute(
        "INSERT INTO readings VALUES (%s, 'rg-003', 'rain_mm', 90.0)",
        (base + timedelta(seconds=45),),
    )
    await storage.refresh_rollups(conn, now)
    cur = await conn.execute(
        "SELECT samples, avg, max FROM readings_1h WHERE bucket = %s",
        (datetime(2026, 11, 24, 9, tzinfo=UTC),),
    )
    assert await cur.fetchone() == (3, 40.0, 90.0)


async def test_rollups_weight_hourly_average_by_samples(conn: psycopg.AsyncConnection) -> None:
    storage = PlainStorage(StorageSettings(rollup_lookback_minutes=120))
    now = datetime(2026, 11, 24, 11, 0, 0, tzinfo=UTC)
    await storage.maintain(conn, now.date())
    t = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    rows = [(t, 0.0), (t + timedelta(minutes=1), 30.0), (t + timedelta(minutes=1, seconds=1), 30.0)]
    async with conn.cursor() as cur:
        await cur.executemany("INSERT INTO readings VALUES (%s, 'tc-1', 'vehicles', %s)", rows)
    await storage.refresh_rollups(conn, now)
    cur = await conn.execute("SELECT samples, avg FROM readings_1h")
    assert await cur.fetchone() == (3, 20.0)  # not (0 + 30) / 2 = 15


def test_flavor_selects_the_backend() -> None:
    assert storage_for("plain", StorageSettings()).flavor == "plain"
    assert storage_for("timescale", StorageSettings()).flavor == "timescale"
