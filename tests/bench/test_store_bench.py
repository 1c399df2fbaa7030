"""Store ceilings on this machine: binary COPY vs executemany INSERT into the partitioned
readings table, measured in the same run. `make bench` runs it; `make test` skips it."""

import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from pantau import migrate
from pantau.settings import StorageSettings
from pantau.storage import PlainStorage

pytestmark = pytest.mark.bench
ROWS = 200_000


def rows(offset: int) -> list[tuple[datetime, str, str, float]]:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    return [
        (
            start + timedelta(microseconds=offset + i),
            f"dev-{i % 500:04d}",
            "water_level_cm",
            i * 0.1,
        )
        for i in range(ROWS)
    ]


async def test_copy_vs_insert(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await migrate.migrate(conn, "plain")
        await PlainStorage(StorageSettings()).maintain(conn, datetime.now(UTC).date())
        results = {}
        for batch in (1_000, 10_000):
            data = rows(batch * 10)
            t0 = time.perf_counter()
            for i in range(0, ROWS, batch):
                async with (
                    conn.transaction(),
                    conn.cursor() as cur,
                    cur.copy(
                        "COPY readings (time, device_id, metric, value) FROM STDIN (FORMAT BINARY)"
                    ) as copy,
                ):
                    copy.set_types(["timestamptz", "text", "text", "float8"])
                    for row in data[i : i + batch]:
                        await copy.write_row(row)
            results[f"binary COPY, {batch}-row transactions"] = ROWS / (time.perf_counter() - t0)
        data = rows(1)[:50_000]
        t0 = time.perf_counter()
        for i in range(0, len(data), 1_000):
            async with conn.transaction(), conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO readings (time, device_id, metric, value) VALUES (%s, %s, %s, %s)",
                    data[i : i + 1_000],
                )
        results["executemany INSERT, 1000-row transactions"] = len(data) / (
            time.perf_counter() - t0
        )
    base = results["executemany INSERT, 1000-row transactions"]
    print("\n| method | rows/s | ratio to executemany |\n|---|---|---|")
    for name, rate in results.items():
        print(f"| {name} | {rate:,.0f} | {rate / base:.1f}x |")
    assert all(rate > 0 for rate in results.values())
