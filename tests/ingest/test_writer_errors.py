"""Database errors by kind, each produced for real on a PostgreSQL of the test's own: what means
"down" (spool, retry) and what is another refusal (spool, report, set aside on replay)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

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
