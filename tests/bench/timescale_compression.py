"""By hand, not by `make test` or `make bench`: TimescaleDB's compression ratio on our own data.

Needs TimescaleDB built for the PostgreSQL 15 found here (docs/capacity.md says how it was done:
TimescaleDB 2.28.x from source, installed into PostgreSQL 15's own directories); CI has no
TimescaleDB, so this is a measurement to repeat by hand, not a test.

It starts a throwaway cluster on a free port with `shared_preload_libraries=timescaledb`
(never the machine's own cluster), migrates it with Pantau's migrations (storage.backend =
timescale), stops TimescaleDB's background jobs (so nothing compresses or refreshes behind the
measurement), writes the first `--days` days of the wall benchmark's readings
(tests/bench/wall_data.py: 2,000 devices, 2,240 series every 5 minutes, plausible values, silent
during outages) with binary COPY one UTC hour at a time as ingestion lays them out, then
compresses every chunk with the migration's settings (segment by device_id, order by metric,
time DESC) and prints the sizes before and after.

    .venv/bin/python -m tests.bench.timescale_compression --days 8
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from pantau.errors import MigrationError
from pantau.migrate import migrate
from tests.bench.wall_data import SLOT, build
from tests.bench.wall_load import copy_series
from tests.fixtures.servers import throwaway_postgres

OPTIONS = (
    "-c shared_preload_libraries=timescaledb",
    "-c timescaledb.telemetry_level=off",
    "-c fsync=off",  # throwaway data: the sizes do not depend on durability
    "-c full_page_writes=off",
    "-c max_wal_size=8GB",
    "-c shared_buffers=512MB",
    "-c maintenance_work_mem=256MB",
)


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.1f} MiB"


async def _migrate(dsn: str) -> str:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        try:
            applied = await migrate(conn, "timescale")
            return f"all migrations applied ({len(applied)})"
        except MigrationError as exc:  # the readings hypertable (0001) is there all the same
            return f"stopped: {exc}"


def _one(conn: psycopg.Connection[Any], sql: str, *args: Any) -> Any:
    row = conn.execute(sql, args).fetchone()
    assert row is not None
    return row[0] if len(row) == 1 else row


def measure(dsn: str, days: int, caggs: bool) -> None:
    print("migrations:", asyncio.run(_migrate(dsn)))
    with psycopg.connect(dsn, autocommit=True) as conn:
        print(
            "PostgreSQL", _one(conn, "SHOW server_version"),
            "TimescaleDB",
            _one(conn, "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"),
        )  # fmt: skip
        conn.execute(
            "SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs"
            " WHERE job_id >= 1000"
        )
        data = build(datetime.now(UTC))
        slots = days * 24 * 3600 // SLOT
        t0 = time.monotonic()
        rows = copy_series(conn, data, "readings", 0, slots)
        print(f"readings: {rows:,} rows, {len(data.series):,} series of {len(data.devices):,}"
              f" devices, {days} days from {data.start:%Y-%m-%d %H:%M} UTC,"
              f" COPY {time.monotonic() - t0:.0f} s")  # fmt: skip
        conn.execute("VACUUM (ANALYZE) readings")
        chunks = _one(conn, "SELECT count(*) FROM show_chunks('readings')")
        before = _one(
            conn,
            "SELECT table_bytes, index_bytes, toast_bytes, total_bytes"
            " FROM hypertable_detailed_size('readings')",
        )
        print(f"before: {chunks} chunks, table {_mib(before[0])}, indexes {_mib(before[1])},"
              f" toast {_mib(before[2])}, total {_mib(before[3])},"
              f" {before[3] / rows:.1f} bytes/reading")  # fmt: skip
        if caggs:
            _caggs(conn)
        t0 = time.monotonic()
        for (chunk,) in conn.execute("SELECT show_chunks('readings')::text").fetchall():
            conn.execute("SELECT compress_chunk(%s::regclass, if_not_compressed => true)", (chunk,))
        print(f"compressed {chunks} chunks in {time.monotonic() - t0:.0f} s")
        conn.execute("VACUUM (ANALYZE) readings")
        stats = _one(
            conn,
            "SELECT total_chunks, number_compressed_chunks, before_compression_total_bytes,"
            " after_compression_total_bytes, after_compression_table_bytes,"
            " after_compression_index_bytes, after_compression_toast_bytes"
            " FROM hypertable_compression_stats('readings')",
        )
        after = _one(conn, "SELECT total_bytes FROM hypertable_detailed_size('readings')")
        print(f"hypertable_compression_stats: {stats[1]}/{stats[0]} chunks compressed,"
              f" before {_mib(stats[2])}, after {_mib(stats[3])} (table {_mib(stats[4])},"
              f" indexes {_mib(stats[5])}, toast {_mib(stats[6])}):"
              f" ratio {stats[2] / stats[3]:.1f}x")  # fmt: skip
        print(f"hypertable_detailed_size after: {_mib(after)}, {after / rows:.1f} bytes/reading;"
              f" ratio to before {before[3] / after:.1f}x")  # fmt: skip
        count = _one(conn, "SELECT count(*) FROM readings")
        print(f"rows read back from the compressed chunks: {count:,} (written {rows:,})")
        if caggs:
            _compress_caggs(conn)


def _caggs(conn: psycopg.Connection[Any]) -> None:
    """Refresh both continuous aggregates over everything written; print their sizes."""
    counts = (
        ("readings_1h", "SELECT count(*) FROM readings_1h"),
        ("readings_1m", "SELECT count(*) FROM readings_1m"),
    )
    for view, count_sql in counts:
        t0 = time.monotonic()
        conn.execute("CALL refresh_continuous_aggregate(%s::regclass, NULL, NULL)", (view,))
        schema, table = _one(
            conn,
            "SELECT materialization_hypertable_schema, materialization_hypertable_name"
            " FROM timescaledb_information.continuous_aggregates WHERE view_name = %s",
            view,
        )
        size = _one(conn, "SELECT total_bytes FROM hypertable_detailed_size(%s::regclass)",
                    f"{schema}.{table}")  # fmt: skip
        buckets = _one(conn, count_sql)
        print(f"{view}: {buckets:,} buckets, {_mib(size)} ({size / buckets:.1f} bytes/bucket),"
              f" refreshed in {time.monotonic() - t0:.0f} s; uncompressed (no policy)")  # fmt: skip


def _materialized_size(conn: psycopg.Connection[Any], view: str) -> int:
    schema, table = _one(
        conn,
        "SELECT materialization_hypertable_schema, materialization_hypertable_name"
        " FROM timescaledb_information.continuous_aggregates WHERE view_name = %s",
        view,
    )
    return int(
        _one(
            conn,
            "SELECT total_bytes FROM hypertable_detailed_size(%s::regclass)",
            f"{schema}.{table}",
        )
    )


def _compress_caggs(conn: psycopg.Connection[Any]) -> None:
    """What compressing the continuous aggregates would save (the migrations do not: a
    possible change), with TimescaleDB's defaults for them (segment by their GROUP BY columns)."""
    steps = (
        (
            "readings_1h",
            "ALTER MATERIALIZED VIEW readings_1h SET (timescaledb.compress = true)",
            "SELECT compress_chunk(c, true) FROM show_chunks('readings_1h') c",
            "SELECT count(*) FROM readings_1h",
        ),
        (
            "readings_1m",
            "ALTER MATERIALIZED VIEW readings_1m SET (timescaledb.compress = true)",
            "SELECT compress_chunk(c, true) FROM show_chunks('readings_1m') c",
            "SELECT count(*) FROM readings_1m",
        ),
    )
    for view, enable, compress, count_sql in steps:
        before = _materialized_size(conn, view)
        t0 = time.monotonic()
        conn.execute(enable)
        conn.execute(compress)
        after = _materialized_size(conn, view)
        buckets = _one(conn, count_sql)
        print(f"{view} compressed (not what the migrations do): {_mib(before)} -> {_mib(after)},"
              f" {after / buckets:.1f} bytes/bucket, ratio {before / after:.1f}x,"
              f" {time.monotonic() - t0:.0f} s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=8, help="days of readings (at most 30)")
    parser.add_argument(
        "--caggs", action="store_true", help="also refresh and size the continuous aggregates"
    )
    args = parser.parse_args()
    with throwaway_postgres(OPTIONS) as cluster:
        measure(cluster.dsn(), min(args.days, 30), args.caggs)


if __name__ == "__main__":
    main()
