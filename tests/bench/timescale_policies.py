"""By hand, not by `make test` or `make bench`: the TimescaleDB flavor's policies on a real
TimescaleDB, and the preload check. CI has no TimescaleDB; docs/capacity.md has the last run.

Needs TimescaleDB built for PostgreSQL 15 and installed into a copy of PostgreSQL 15's
directories, so that no other cluster of the machine sees the extension (docs/capacity.md):

    make install DESTDIR=/tmp/pgts    # in TimescaleDB's build directory
    cp -an /usr/lib/postgresql/15/. /tmp/pgts/usr/lib/postgresql/15/
    cp -an /usr/share/postgresql/15/. /tmp/pgts/usr/share/postgresql/15/
    .venv/bin/python -m tests.bench.timescale_policies --pg-bin /tmp/pgts/usr/lib/postgresql/15/bin

With `shared_preload_libraries=timescaledb`: every migration applies with the TimescaleDB flavor;
Pantau's policies are there (compression of the readings and both aggregates, retention of the
readings and the 1 minute aggregate), once each after a second start; 40 days of a series every
5 minutes, the aggregates refreshed and the compression jobs run, leave compressed aggregate
chunks; a reading 25 days late, noted as the writer notes it, reaches the compressed 1 minute
chunk through Pantau's late refresh. Without the preload: `storage.backend = auto` stops with the
fix, for a superuser (the connection kept) and for a plain user (the loader's FATAL ends the
session). Any other outcome fails with what was seen.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from pantau import migrate
from pantau.errors import MigrationError
from pantau.settings import Settings
from pantau.storage import storage_for
from tests.fixtures.servers import throwaway_postgres

PRELOADED = (
    "-c shared_preload_libraries=timescaledb",
    "-c timescaledb.telemetry_level=off",
    "-c fsync=off",
)
DAYS = 40
LATE = timedelta(days=25, minutes=2)


def expect(ok: bool, seen: object) -> None:
    if not ok:
        raise SystemExit(f"not as expected: {seen!r}")


async def _rows(conn: psycopg.AsyncConnection, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    return await (await conn.execute(sql, args)).fetchall()


async def policies(dsn: str) -> None:
    storage = storage_for("timescale", Settings().storage)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        applied = await migrate.migrate(conn, "auto")
        flavor = await migrate.current_flavor(conn)
        expect(flavor == "timescale" and len(applied) == len(migrate.shipped_migrations()), applied)
        print(f"migrations: all {len(applied)} applied, TimescaleDB flavor")
        await storage.apply_policies(conn)
        await conn.set_autocommit(True)
        jobs = await _rows(
            conn,
            "SELECT proc_name, hypertable_name FROM timescaledb_information.jobs"
            " WHERE proc_name IN ('policy_compression', 'policy_retention') ORDER BY 1, 2",
        )
        print("jobs:", jobs)
        expect(
            jobs
            == [
                ("policy_compression", "readings"),
                ("policy_compression", "readings_1h"),
                ("policy_compression", "readings_1m"),
                ("policy_retention", "readings"),
                ("policy_retention", "readings_1m"),
            ],
            jobs,
        )

        now = datetime.now(UTC).replace(second=0, microsecond=0)
        async with conn.cursor() as cur, cur.copy("COPY readings FROM STDIN") as copy:
            for i in range(DAYS * 24 * 12):
                await copy.write_row((now - timedelta(minutes=5 * i), "dev-1", "level", i % 100))
        for view in ("readings_1m", "readings_1h"):
            await conn.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, NULL)")
        compression = "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = %s"
        for (job,) in await _rows(conn, compression, "policy_compression"):
            await conn.execute(f"CALL run_job({int(job)})")
        chunks = await _rows(
            conn,
            "SELECT v.view_name, count(*) FILTER (WHERE c.is_compressed), count(*)"
            " FROM timescaledb_information.continuous_aggregates v"
            " JOIN timescaledb_information.chunks c"
            " ON c.hypertable_name = v.materialization_hypertable_name GROUP BY 1 ORDER BY 1",
        )
        print("aggregate chunks (compressed, all):", chunks)
        expect(all(compressed > 0 for _, compressed, _ in chunks), chunks)

        late = now - LATE
        await conn.execute("INSERT INTO readings VALUES (%s, 'dev-1', 'level', 999)", (late,))
        await conn.execute("SELECT pantau_note_written(%s, %s)", (late, late))
        await conn.set_autocommit(False)
        ranges = await storage.refresh_late(conn, now + timedelta(hours=4))
        await conn.set_autocommit(True)
        minute = await _rows(
            conn,
            "SELECT max FROM readings_1m"
            " WHERE device_id = 'dev-1' AND bucket = time_bucket('1 minute', %s::timestamptz)",
            late,
        )
        hour = await _rows(
            conn,
            "SELECT max FROM readings_1h"
            " WHERE device_id = 'dev-1' AND bucket = time_bucket('1 hour', %s::timestamptz)",
            late,
        )
        compressed = await _rows(
            conn,
            "SELECT c.is_compressed FROM timescaledb_information.chunks c"
            " JOIN timescaledb_information.continuous_aggregates v"
            " ON c.hypertable_name = v.materialization_hypertable_name"
            " WHERE v.view_name = 'readings_1m' AND %s >= c.range_start AND %s < c.range_end",
            late,
            late,
        )
        print(f"a reading {LATE} late: {ranges} range refreshed, 1 m {minute}, 1 h {hour},"
              f" its 1 m chunk compressed: {compressed}")  # fmt: skip
        expect(minute == hour == [(999.0,)] and compressed == [(True,)], (minute, hour, compressed))

        expect(await migrate.migrate(conn, "auto") == [], "a second start applied migrations")
        await storage.apply_policies(conn)
        await conn.set_autocommit(True)
        again = await _rows(
            conn,
            "SELECT count(*) FROM timescaledb_information.jobs WHERE proc_name = %s",
            "policy_retention",
        )
        print("retention jobs after a second start:", again)
        expect(again == [(2,)], again)


async def not_preloaded(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        try:
            await migrate.migrate(conn, "auto")
        except MigrationError as exc:
            print(f"superuser: {exc} (connection closed: {conn.closed})")
            expect("not preloaded" in str(exc) and not conn.closed, exc)
        else:
            expect(False, "migrated without the preload")
        await conn.execute("CREATE ROLE plain_user LOGIN PASSWORD 'throwaway'")
        await conn.execute("CREATE DATABASE plain_user OWNER plain_user")
    other = make_conninfo(dsn, user="plain_user", password="throwaway", dbname="plain_user")
    async with await psycopg.AsyncConnection.connect(other, autocommit=True) as conn:
        try:
            await migrate.migrate(conn, "auto")
        except MigrationError as exc:
            print(f"plain user: {' '.join(str(exc).split())[:160]}... (closed: {conn.closed})")
            expect("not preloaded" in str(exc) and conn.closed, exc)
        else:
            expect(False, "migrated without the preload")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--pg-bin", type=Path, required=True, help="bin dir of the PostgreSQL 15 with TimescaleDB"
    )
    args = parser.parse_args()
    with throwaway_postgres(PRELOADED, bin_dir=args.pg_bin) as cluster:
        asyncio.run(policies(cluster.dsn()))
    with throwaway_postgres(("-c fsync=off",), bin_dir=args.pg_bin) as cluster:
        asyncio.run(not_preloaded(cluster.dsn()))
    print("all as expected")


if __name__ == "__main__":
    main()
