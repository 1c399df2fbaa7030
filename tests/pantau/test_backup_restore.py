"""docs/deploy.md "Backup and upgrade", plain PostgreSQL: the dump, the roles beside it and the
restore commands as written there, from one real cluster into another; Pantau then finds its
schema current (nothing re-applied) and the wall's read-only role keeps its grants. (The
TimescaleDB variant, with timescaledb_pre_restore/post_restore, needs TimescaleDB: not here.)"""

from __future__ import annotations

import asyncio
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from pantau import migrate
from pantau.embedded import PostgresCluster
from tests.fixtures.servers import throwaway_postgres


def _run(cluster: PostgresCluster, *argv: str) -> subprocess.CompletedProcess[str]:
    """A client program of the cluster's PostgreSQL, as in the guide, over its socket."""
    program, *args = argv
    return subprocess.run(
        [str(cluster.bin_dir / program), "-h", str(cluster.socket_dir), "-p", str(cluster.port),
         "-U", cluster.user, *args],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


async def _migrate(dsn: str) -> list[migrate.Migration]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        return await migrate.migrate(conn, "plain")


def test_dump_and_restore_as_the_guide_says(tmp_path: Path) -> None:
    dump = tmp_path / "pantau-2026-12-07.dump"
    roles = tmp_path / "roles.sql"
    at = datetime.now(UTC).replace(microsecond=0)
    with throwaway_postgres() as source:
        assert asyncio.run(_migrate(source.dsn()))
        with psycopg.connect(source.dsn(), autocommit=True) as conn:
            conn.execute(
                "SELECT pantau_ensure_partitions('readings', %s, %s)", (at.date(), at.date())
            )
            conn.execute(
                "INSERT INTO readings (time, device_id, metric, value)"
                " VALUES (%s, 'wl-setu-001', 'water_level_cm', 123.5)",
                (at,),
            )
        done = _run(
            source, "pg_dump", "--format=custom", "--compress=6", f"--file={dump}", "pantau"
        )
        assert done.returncode == 0, done.stderr
        done = _run(source, "pg_dumpall", "--roles-only", f"--file={roles}")
        assert done.returncode == 0, done.stderr
    assert "pantau_wall" in roles.read_text()

    with throwaway_postgres(database="postgres") as target:
        # The roles first (the one that made the cluster exists already: that error is expected).
        _run(target, "psql", "-d", "postgres", "-q", "-f", str(roles))
        done = _run(target, "createdb", "-O", "pantau", "pantau_restored")
        assert done.returncode == 0, done.stderr
        done = _run(
            target, "pg_restore", "--jobs=2", "--no-owner", "--role=pantau",
            "--dbname=pantau_restored", str(dump),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr

        restored = target.dsn("pantau_restored")
        assert asyncio.run(_migrate(restored)) == []  # the recorded migrations are kept
        with psycopg.connect(restored) as conn:
            row = conn.execute("SELECT time, value FROM readings").fetchall()
            assert row == [(at, 123.5)]
            flavor = conn.execute("SELECT DISTINCT flavor FROM pantau_migrations").fetchall()
            assert flavor == [("plain",)]
            granted = conn.execute(
                "SELECT has_table_privilege('pantau_wall', 'wall.device_state', 'SELECT')"
            ).fetchone()
            assert granted == (True,)
