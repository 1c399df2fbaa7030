from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from ingest.batch import Batch, Message, Processor
from ingest.decoders import REJECTED
from ingest.metrics import IngestMetrics
from ingest.pipeline import Pipeline
from ingest.spool import Spool
from ingest.writer import DatabaseDown, Writer
from pantau import migrate
from pantau.embedded import free_port
from pantau.mappings import default_mappings
from pantau.settings import IngestSettings, StorageSettings
from pantau.storage import PlainStorage

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def db(database_url: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        import asyncio

        async def setup() -> None:
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as a:
                await migrate.migrate(a, "plain")
                await PlainStorage(StorageSettings()).maintain(a, NOW.date())

        asyncio.run(setup())
        conn.execute("SELECT 1")
    return database_url


def batch_of(*messages: tuple[str, str]) -> Batch:
    processor = Processor.from_settings(default_mappings(), 300, 7)
    return processor.batch(
        Message(t, p.encode(), NOW, mid=i + 1, qos=1) for i, (t, p) in enumerate(messages)
    )


def rows(url: str, sql: str) -> list[tuple]:  # type: ignore[type-arg]
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def test_write_is_idempotent_and_tracks_last_seen(db: str) -> None:
    writer = Writer(db)
    first = batch_of(("bekasi/setu/wl-1/level", "10"), ("bekasi/setu/wl-2/level", "20"))
    result = writer.write(first)
    assert (result.written, result.duplicates) == (2, 0)
    again = writer.write(first)  # a redelivery
    assert (again.written, again.duplicates) == (0, 2)
    assert rows(db, "SELECT device_id, value FROM readings ORDER BY 1") == [
        ("wl-1", 10.0),
        ("wl-2", 20.0),
    ]
    assert rows(db, "SELECT device_id, last_reading_at FROM device_last_seen ORDER BY 1") == [
        ("wl-1", NOW),
        ("wl-2", NOW),
    ]
    assert rows(db, "SELECT count(*) FROM pending_devices") == [(2,)]
    writer.close()


def test_older_reading_does_not_move_last_seen_back(db: str) -> None:
    writer = Writer(db)
    later = int((NOW + timedelta(seconds=30)).timestamp() * 1000)
    earlier = int((NOW - timedelta(hours=1)).timestamp() * 1000)
    writer.write(
        batch_of(("bekasi-json/setu/aq-1", f'{{"ts": {later}, "readings": {{"pm25": 1}}}}'))
    )
    writer.write(
        batch_of(("bekasi-json/setu/aq-1", f'{{"ts": {earlier}, "readings": {{"pm25": 2}}}}'))
    )
    assert rows(db, "SELECT last_reading_at FROM device_last_seen") == [
        (NOW + timedelta(seconds=30),)
    ]
    writer.close()


def test_quarantine_is_written_with_the_batch(db: str) -> None:
    writer = Writer(db)
    result = writer.write(
        batch_of(("bekasi/setu/wl-1/level", "ten"), ("bekasi/setu/wl-1/level", "11"))
    )
    assert [q.reason for q in result.quarantined] == ["malformed_payload"]
    assert rows(db, "SELECT topic, payload, reason FROM quarantine") == [
        ("bekasi/setu/wl-1/level", b"ten", "malformed_payload")
    ]
    assert rows(db, "SELECT value FROM readings") == [(11.0,)]
    writer.close()


def test_missing_partition_is_created(db: str) -> None:
    writer = Writer(db)
    old = NOW - timedelta(days=6, hours=23)  # before the partitions made ahead of time
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "SELECT pantau_drop_partitions('readings', %s)", ((NOW - timedelta(days=2)).date(),)
        )
    batch = Batch(
        readings=[(old, "wl-1", "level", 1.0)], origins=[0], messages=[Message("t", b"1", NOW)]
    )
    assert writer.write(batch).written == 1
    assert rows(db, "SELECT value FROM readings") == [(1.0,)]
    writer.close()


def test_rows_the_database_refuses_are_found_and_quarantined(db: str) -> None:
    writer = Writer(db)
    messages = [Message(f"t/{i}", f"payload-{i}".encode(), NOW) for i in range(5)]
    readings = [(NOW, f"dev-{i}", "m", float(i)) for i in range(5)]
    readings[3] = (NOW, "dev-\x00-nul", "m", 3.0)  # PostgreSQL text cannot hold NUL
    batch = Batch(readings=readings, origins=[0, 1, 2, 3, 4], messages=messages)
    result = writer.write(batch)
    assert result.written == 4
    assert [(q.topic, q.payload, q.reason) for q in result.quarantined] == [
        ("t/3", b"payload-3", REJECTED)
    ]
    assert rows(db, "SELECT count(*) FROM readings") == [(4,)]
    assert rows(db, "SELECT topic, reason FROM quarantine") == [("t/3", REJECTED)]
    writer.close()


def test_unreachable_database_is_database_down() -> None:
    writer = Writer(f"postgresql://x@127.0.0.1:{free_port()}/x", connect_timeout=2)
    with pytest.raises(DatabaseDown):
        writer.write(batch_of(("bekasi/setu/wl-1/level", "1")))


def test_another_value_for_a_stored_reading_is_a_conflict_not_a_duplicate(db: str) -> None:
    writer = Writer(db)
    ts = int(NOW.timestamp() * 1000)

    def json_batch(**values: float) -> Batch:
        return batch_of(
            *(
                (f"bekasi-json/setu/{device}", f'{{"ts": {ts}, "readings": {{"pm25": {v}}}}}')
                for device, v in values.items()
            )
        )

    first = writer.write(json_batch(aq_1=10, aq_2=20, aq_3=30))
    assert (first.written, first.duplicates, first.conflicting) == (3, 0, 0)
    # aq_1 redelivered as it was, aq_2 with another value, aq_4 new.
    again = writer.write(json_batch(aq_1=10, aq_2=21, aq_4=40))
    assert (again.written, again.duplicates, again.conflicting) == (1, 1, 1)
    assert rows(db, "SELECT device_id, value FROM readings ORDER BY 1") == [
        ("aq_1", 10.0),
        ("aq_2", 20.0),  # first write wins
        ("aq_3", 30.0),
        ("aq_4", 40.0),
    ]
    writer.close()


def test_pipeline_counts_conflicts_apart_from_duplicates(db: str, tmp_path: Path) -> None:
    registry = CollectorRegistry()
    metrics = IngestMetrics.create(registry)
    pipeline = Pipeline(
        IngestSettings(spool_dir=tmp_path / "spool"),
        Processor.from_settings(default_mappings(), 300, 7),
        Writer(db),
        Spool(tmp_path / "spool", 1 << 20),
        metrics,
        max_pending=100,
    )
    ts = int(NOW.timestamp() * 1000)
    for value in (1, 1, 2):  # stored, redelivered, then another value for the same time
        payload = f'{{"ts": {ts}, "readings": {{"pm25": {value}}}}}'.encode()
        pipeline._committed(
            batch := batch_of(("bekasi-json/setu/aq-1", payload.decode())),
            pipeline._timed_write(batch),
        )
    assert registry.get_sample_value("pantau_ingest_readings_written_total") == 1
    assert registry.get_sample_value("pantau_ingest_readings_duplicate_total") == 1
    assert registry.get_sample_value("pantau_ingest_readings_conflicting_total") == 1
    pipeline._writer.close()
