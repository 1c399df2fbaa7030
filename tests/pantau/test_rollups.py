"""Late readings reach the rollups (issue 17.4): a batch written before the regular refresh window
is noted by the real COPY writer in its own transaction, and the storage worker refreshes the
noted ranges, coalesced, so that `readings_1m` and `readings_1h` equal the aggregates computed
from `readings`. Plain PostgreSQL (the TimescaleDB path cannot run here: no TimescaleDB build)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import psycopg
import pytest

from ingest.batch import Batch
from ingest.writer import Writer
from pantau import migrate
from pantau.settings import Settings, StorageSettings
from pantau.storage import HOUR, PlainStorage, coalesce
from tests.fixtures.mqtt import Publisher
from tests.pantau.test_service import running, wait_ready

EXPECTED_1M = """
SELECT date_trunc('minute', time, 'UTC'), device_id, metric,
       count(*), round(avg(value)::numeric, 6), min(value), max(value)
FROM readings GROUP BY 1, 2, 3 ORDER BY 2, 3, 1
"""
ACTUAL_1M = """
SELECT bucket, device_id, metric, samples, round(avg::numeric, 6), min, max
FROM readings_1m ORDER BY 2, 3, 1
"""
EXPECTED_1H = EXPECTED_1M.replace("'minute'", "'hour'")
ACTUAL_1H = ACTUAL_1M.replace("readings_1m", "readings_1h")


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[psycopg.AsyncConnection]:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await migrate.migrate(conn, "plain")
        yield conn


async def rows(conn: psycopg.AsyncConnection, sql: str) -> list[tuple[object, ...]]:
    return await (await conn.execute(sql)).fetchall()


def write(url: str, readings: list[tuple[datetime, str, str, float]]) -> None:
    """Through the real ingestion writer, one batch."""
    writer = Writer(url)
    try:
        writer.write(Batch(readings=list(readings), origins=[0] * len(readings)))
    finally:
        writer.close()


def minute(when: datetime) -> datetime:
    return when.replace(second=0, microsecond=0)


async def test_a_gap_filled_late_reaches_both_rollups(
    conn: psycopg.AsyncConnection, database_url: str
) -> None:
    storage = PlainStorage(StorageSettings())
    await storage.apply_policies(conn)  # partitions, and the late threshold (13 min)
    now = datetime.now(UTC)
    hour = (now - timedelta(hours=5)).replace(minute=0, second=0, microsecond=0)
    # On time, 5 hours ago: a reading at :05 and one at :50, rolled up by the regular refresh
    # that ran then. The 40 minutes between them were lost to an outage.
    on_time = [(hour + timedelta(minutes=5), "wl-1", "level", 100.0)]
    on_time.append((hour + timedelta(minutes=50), "wl-1", "level", 110.0))
    await conn.execute(
        "INSERT INTO readings VALUES (%s, %s, %s, %s), (%s, %s, %s, %s)",
        (*on_time[0], *on_time[1]),
    )
    for minutes in (6, 55):  # two of the regular refreshes that ran then
        await storage.refresh_rollups(conn, hour + timedelta(minutes=minutes))
    assert await rows(conn, ACTUAL_1H) == await rows(conn, EXPECTED_1H)
    assert (await rows(conn, "SELECT samples FROM readings_1h")) == [(2,)]

    # The gap arrives now (a spool replay): 40 readings, one per minute, in 40 batches, and a
    # batch of this minute, which the regular window covers and the writer does not note.
    gap = [(hour + timedelta(minutes=10 + i), "wl-1", "level", float(i)) for i in range(40)]
    for reading in gap:
        await asyncio.to_thread(write, database_url, [reading])
    await asyncio.to_thread(write, database_url, [(minute(now), "wl-1", "level", 7.0)])
    assert await rows(conn, "SELECT count(*) FROM rollup_pending") == [(40,)]

    # The regular refresh alone misses the gap: this is the bug the late refresh fixes.
    await storage.refresh_rollups(conn, datetime.now(UTC))
    assert await rows(conn, ACTUAL_1H) != await rows(conn, EXPECTED_1H)

    refreshed = await storage.refresh_late(conn, datetime.now(UTC))
    assert refreshed == 1  # 40 noted batches, one coalesced hour
    assert await rows(conn, ACTUAL_1M) == await rows(conn, EXPECTED_1M)
    assert await rows(conn, ACTUAL_1H) == await rows(conn, EXPECTED_1H)
    cur = await conn.execute("SELECT samples FROM readings_1h WHERE bucket = %s", (hour,))
    assert await cur.fetchall() == [(42,)]
    assert await rows(conn, "SELECT count(*) FROM rollup_pending") == [(0,)]
    assert await storage.refresh_late(conn, datetime.now(UTC)) == 0


async def test_a_day_uploaded_in_thousands_of_batches_is_a_few_refreshes(
    conn: psycopg.AsyncConnection, database_url: str
) -> None:
    storage = PlainStorage(StorageSettings())
    await storage.apply_policies(conn)
    start = (datetime.now(UTC) - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    # A logger's day of 1 minute values (1,440 batches of one reading), and another device's
    # single late reading 4 days ago: two separate ranges.
    day = [(start + timedelta(minutes=i), "aq-9", "pm25", float(i % 97)) for i in range(1440)]
    writer = Writer(database_url)
    try:
        for reading in [(start - timedelta(days=2), "wl-7", "level", 3.0), *day]:
            await asyncio.to_thread(writer.write, Batch(readings=[reading], origins=[0]))
    finally:
        writer.close()
    assert await rows(conn, "SELECT count(*) FROM rollup_pending") == [(1441,)]
    started = time.monotonic()
    assert await storage.refresh_late(conn, datetime.now(UTC)) == 2
    elapsed = time.monotonic() - started
    assert await rows(conn, ACTUAL_1M) == await rows(conn, EXPECTED_1M)
    assert await rows(conn, ACTUAL_1H) == await rows(conn, EXPECTED_1H)
    assert elapsed < 30, f"{elapsed:.1f}s for 1,441 noted batches"


def test_coalesce_aligns_to_hours_and_merges() -> None:
    t = datetime(2026, 11, 24, 10, 17, tzinfo=UTC)
    ranges = [
        (t, t + timedelta(minutes=5)),  # 10:00-11:00
        (t + timedelta(minutes=50), t + timedelta(minutes=80)),  # 11:00-12:00, adjacent
        (t - timedelta(hours=5), t - timedelta(hours=5)),  # 05:00-06:00, apart
        (t + timedelta(minutes=1), t + timedelta(minutes=2)),  # inside the first
    ]
    hour = t.replace(minute=0)
    assert coalesce(ranges) == [
        (hour - 5 * HOUR, hour - 4 * HOUR),
        (hour, hour + 2 * HOUR),
    ]
    # Nothing before retention is refreshed.
    assert coalesce(ranges, not_before=t - timedelta(hours=1)) == [(hour, hour + 2 * HOUR)]


async def test_the_storage_worker_refreshes_late_readings(settings: Settings) -> None:
    """End to end: late readings published over MQTT to a running service reach readings_1h."""
    settings = settings.model_copy(
        update={"storage": StorageSettings(rollup_refresh_seconds=0.5, rollup_lookback_minutes=5)}
    )
    async with running(settings) as url, httpx.AsyncClient(base_url=url) as http:
        await wait_ready(http)
        late = datetime.now(UTC) - timedelta(hours=6)
        publisher = Publisher(settings.mqtt.port)
        try:
            infos = publisher.publish(
                (
                    "bekasi-json/setu/wl-late",
                    orjson.dumps(
                        {
                            "ts": int((late + timedelta(minutes=i)).timestamp() * 1000),
                            "readings": {"level": i},
                        }
                    ),
                )
                for i in range(30)
            )
            publisher.wait(infos)
        finally:
            publisher.close()
        async with await psycopg.AsyncConnection.connect(settings.database.url) as conn:
            deadline = time.monotonic() + 30
            seen: list[tuple[object, ...]] = []
            while time.monotonic() < deadline:
                seen = await rows(
                    conn, "SELECT sum(samples) FROM readings_1h WHERE device_id = 'wl-late'"
                )
                await conn.commit()
                if seen == [(30,)]:
                    break
                await asyncio.sleep(0.2)
            assert seen == [(30,)]
            assert await rows(conn, ACTUAL_1H) == await rows(conn, EXPECTED_1H)
