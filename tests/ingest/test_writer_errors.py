"""Database errors by kind, each produced for real on a PostgreSQL of the test's own: what means
"down" (spool, retry) and what is another refusal (spool, report, set aside on replay)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from ingest.batch import Batch, Message
from ingest.writer import DatabaseDown, WriteFailed, Writer
from pantau.embedded import PostgresCluster
from tests.fixtures.servers import throwaway_postgres


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    with throwaway_postgres() as c:
        yield c


@pytest.fixture
def url(cluster: PostgresCluster) -> Iterator[str]:
    import asyncio
    import uuid

    from pantau import migrate

    name = f"e_{uuid.uuid4().hex[:10]}"
    cluster.create_database(name)

    async def setup() -> None:
        async with await psycopg.AsyncConnection.connect(cluster.dsn(name), autocommit=True) as c:
            await migrate.migrate(c, "plain")

    asyncio.run(setup())
    yield cluster.dsn(name)
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {name} RESET ALL")
    cluster.drop_database(name)


def one(device: str = "wl-1") -> Batch:
    now = datetime.now(UTC)
    return Batch(
        readings=[(now, device, "level", 1.0)],
        origins=[0],
        messages=[Message(f"bekasi/setu/{device}/level", b"1", now)],
    )


def admin(url: str, sql: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = off")
        conn.execute(sql)


def test_read_only_is_down_when_writing_and_when_connecting(url: str) -> None:
    writer = Writer(url)
    writer.write(one())
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    admin(url, f"ALTER DATABASE {name} SET default_transaction_read_only = on")
    admin(
        url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = 'pantau-ingest'",
    )
    with pytest.raises(DatabaseDown) as lost:
        writer.write(one())  # the terminated connection
    assert lost.value.kind == "admin_shutdown"
    with pytest.raises(DatabaseDown, match="read only: cannot execute") as refused:
        writer.write(one())  # a new connection to a read-only database
    assert refused.value.kind == "read_only"
    admin(url, f"ALTER DATABASE {name} RESET default_transaction_read_only")
    assert writer.write(one("wl-2")).written == 1
    writer.close()


def test_too_many_connections_is_down(url: str) -> None:
    admin(url, "CREATE ROLE limited LOGIN CONNECTION LIMIT 0")
    try:
        writer = Writer(url.replace("postgresql://pantau@", "postgresql://limited@"))
        with pytest.raises(DatabaseDown, match="too many connections") as refused:
            writer.write(one())
        assert refused.value.kind == "too_many_connections"
    finally:
        admin(url, "DROP ROLE limited")


def test_another_refusal_is_write_failed_and_the_writer_goes_on(url: str) -> None:
    admin(
        url,
        """
        CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.device_id = 'poison' THEN
                RAISE EXCEPTION 'poisoned row' USING ERRCODE = 'XX000';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER poison BEFORE INSERT ON readings FOR EACH ROW EXECUTE FUNCTION poison();
        """,
    )
    writer = Writer(url)
    with pytest.raises(WriteFailed, match=r"InternalError \(XX000\): poisoned row"):
        writer.write(one("poison"))
    assert writer.write(one("wl-3")).written == 1  # a fresh connection, no stuck transaction
    writer.close()


def test_a_full_database_disk_is_down_until_there_is_room(url: str) -> None:
    """Today's partition on a tablespace of its own, on a 1 MiB tmpfs: the database's disk
    fills for real (`could not extend file`: DiskFull)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    writer = Writer(url)
    writer.write(one())
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT tableoid::regclass::text FROM readings").fetchone()
    assert row
    partition = row[0]
    base = Path(tempfile.mkdtemp(prefix="pantau-pgdisk-"))
    base.chmod(0o755)  # the postgres user must reach it
    disk = base / "disk"
    disk.mkdir()
    postgres = pwd.getpwnam("postgres")
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size=1m,uid={postgres.pw_uid},mode=0700", "tmpfs", disk],
        check=True,
    )

    def fill() -> DatabaseDown:
        now = datetime.now(UTC)
        for k in range(20):
            rows = [(now.replace(microsecond=i), f"wl-full-{k}", "m", 1.0) for i in range(10000)]
            try:
                writer.write(
                    Batch(readings=rows, origins=[0] * len(rows), messages=[Message("t", b"", now)])
                )
            except DatabaseDown as exc:
                return exc
        raise AssertionError("the database's disk never filled")

    try:
        admin(url, f"CREATE TABLESPACE small LOCATION '{disk}'")
        admin(url, f"ALTER TABLE {partition} SET TABLESPACE small")
        full = fill()
        assert full.kind == "disk_full", str(full)
        assert "could not extend file" in str(full)
        subprocess.run(["mount", "-o", "remount,size=64m", disk], check=True)  # room again
        assert writer.write(one("wl-after")).written == 1
        writer.close()
    finally:
        admin(url, f"ALTER TABLE {partition} SET TABLESPACE pg_default")
        admin(url, "DROP TABLESPACE IF EXISTS small")
        subprocess.run(["umount", "-l", disk], check=True)
        shutil.rmtree(base, ignore_errors=True)
