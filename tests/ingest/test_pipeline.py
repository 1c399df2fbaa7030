"""The pipeline's replay against a real PostgreSQL: poison records are set aside as dead letters
and the replay goes on; `pantau quarantine dead-letters` lists and replays them."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from ingest.batch import Batch, Message, Processor
from ingest.metrics import IngestMetrics
from ingest.pipeline import Pipeline
from ingest.spool import Spool
from ingest.writer import Writer
from pantau.mappings import default_mappings
from pantau.settings import IngestSettings
from tests.fixtures.pantau_proc import wait_for

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)

# A real error of a kind the writer does not know (neither "down" nor a bad row): a trigger
# raising SQLSTATE XX000 for one device.
POISON = """
CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.device_id = 'poison' THEN
        RAISE EXCEPTION 'poisoned row' USING ERRCODE = 'XX000';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER poison BEFORE INSERT ON readings FOR EACH ROW EXECUTE FUNCTION poison();
"""


def batch_of(device: str, n: int) -> Batch:
    readings = [
        (NOW + timedelta(seconds=n, milliseconds=i), device, "m", float(i)) for i in range(3)
    ]
    return Batch(
        readings=readings,
        origins=[0, 0, 0],
        messages=[Message(f"bekasi/setu/{device}/m", f"payload {n}".encode(), NOW, n + 1, 1)],
    )


class Samples:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def __call__(self, name: str, **labels: str) -> float:
        value = self._registry.get_sample_value(name, labels)
        assert value is not None, f"{name} {labels} not in the registry"
        return value


def pipeline_for(url: str, spool_dir: Path) -> tuple[Pipeline, Samples]:
    registry = CollectorRegistry()
    metrics = IngestMetrics.create(registry)
    settings = IngestSettings(spool_dir=spool_dir, database_retry_seconds=0.2)
    pipeline = Pipeline(
        settings,
        Processor.from_settings(default_mappings(), 300, 7),
        Writer(url),
        Spool(spool_dir, settings.spool_max_bytes),
        metrics,
        max_pending=100,
    )
    return pipeline, Samples(registry)


@pytest.fixture
def running_pipeline() -> Iterator[Callable[[Pipeline], None]]:
    threads: list[tuple[Pipeline, threading.Thread]] = []

    def start(pipeline: Pipeline) -> None:
        thread = threading.Thread(target=pipeline.run, daemon=True)
        thread.start()
        threads.append((pipeline, thread))

    yield start
    for pipeline, thread in threads:
        pipeline.stop()
        thread.join(10)


def count(url: str, sql: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


def pantau(*args: str, url: str, spool_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pantau", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            "PATH": os.environ["PATH"],
            "PANTAU_DATABASE__URL": url,
            "PANTAU_INGEST__SPOOL_DIR": str(spool_dir),
        },
    )


def test_poison_batches_and_corrupt_bytes_are_set_aside_and_the_replay_goes_on(
    migrated_db: str, tmp_path: Path, running_pipeline: Callable[[Pipeline], None]
) -> None:
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute(POISON)
    spool_dir = tmp_path / "spool"
    # What an outage left: good, poison, good, then bytes a disk garbled, then good.
    spool = Spool(spool_dir, 1 << 20)
    spool.open()
    spool.append(batch_of("good-1", 1))
    spool.append(batch_of("poison", 2))
    spool.append(batch_of("good-2", 3))
    spool.append(batch_of("garbled", 4))
    spool.append(batch_of("good-3", 5))
    spool.close()
    (segment,) = spool_dir.glob("*.spool")
    data = bytearray(segment.read_bytes())
    garbled = data.index(b"garbled")
    data[garbled : garbled + 7] = b"GARBLED"
    segment.write_bytes(bytes(data))

    pipeline, metrics = pipeline_for(migrated_db, spool_dir)
    running_pipeline(pipeline)
    wait_for("the segment replayed and deleted", lambda: not list(spool_dir.glob("*.spool")))
    assert metrics("pantau_ingest_spool_bytes") == 0
    assert count(migrated_db, "SELECT count(*) FROM readings") == 9
    assert count(migrated_db, "SELECT count(DISTINCT device_id) FROM readings") == 3
    assert metrics("pantau_ingest_dead_letters_total", kind="refused") == 1
    assert metrics("pantau_ingest_dead_letters_total", kind="corrupt") == 1
    assert metrics("pantau_ingest_database_errors_total", kind="other") == 1
    assert metrics("pantau_ingest_dead_letter_bytes") > 0
    assert list(spool_dir.glob("*.spool")) == []  # the segment is gone, its records are not
    assert len(list((spool_dir / "dead").glob("*.json"))) == 2

    listed = pantau("quarantine", "dead-letters", url=migrated_db, spool_dir=spool_dir)
    assert listed.returncode == 0, listed.stderr
    assert "2 dead letters" in listed.stdout
    assert "refused  3 readings from 1 messages (poison)" in listed.stdout
    assert "InternalError (XX000): poisoned row" in listed.stdout
    assert "corrupt record" in listed.stdout

    refused = next(line.split()[0] for line in listed.stdout.splitlines() if "refused" in line)
    shown = pantau(
        "quarantine", "dead-letters", "--show", refused, url=migrated_db, spool_dir=spool_dir
    )
    assert "bekasi/setu/poison/m  payload 2" in shown.stdout, shown.stdout + shown.stderr

    still = pantau("quarantine", "dead-letters", "--replay", url=migrated_db, spool_dir=spool_dir)
    assert "replayed 0" in still.stdout, still.stdout
    assert "still refused" in still.stdout
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute("DROP TRIGGER poison ON readings")
    fixed = pantau("quarantine", "dead-letters", "--replay", url=migrated_db, spool_dir=spool_dir)
    assert "replayed 1 (3 new readings)" in fixed.stdout, fixed.stdout + fixed.stderr
    assert "corrupt, kept for inspection" in fixed.stdout
    assert count(migrated_db, "SELECT count(*) FROM readings WHERE device_id = 'poison'") == 3
    assert len(list((spool_dir / "dead").glob("*.json"))) == 1  # the corrupt one, to inspect


def test_a_batch_refused_live_is_spooled_acknowledged_and_set_aside(
    migrated_db: str, tmp_path: Path, running_pipeline: Callable[[Pipeline], None]
) -> None:
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute(POISON)
    pipeline, metrics = pipeline_for(migrated_db, tmp_path / "spool")
    acked: list[int] = []
    pipeline.ack = lambda acks: acked.extend(mid for mid, _, _ in acks)
    running_pipeline(pipeline)
    for n, device in enumerate(["wl-a", "poison", "wl-b"]):
        pipeline.on_message(
            Message(f"bekasi/setu/{device}/level", b"1.5", datetime.now(UTC), n + 1, 1)
        )
        wait_for(f"message {n + 1} acknowledged", lambda n=n: len(acked) > n)
    wait_for("dead letter", lambda: len(list((tmp_path / "spool" / "dead").glob("*.json"))) == 1)
    assert sorted(acked) == [1, 2, 3]
    assert count(migrated_db, "SELECT count(*) FROM readings") == 2
    assert metrics("pantau_ingest_database_errors_total", kind="other") >= 1


def test_a_batch_that_times_out_on_every_replay_is_set_aside(
    migrated_db: str, tmp_path: Path, running_pipeline: Callable[[Pipeline], None]
) -> None:
    # SQLSTATE 57014 is what statement_timeout raises: "down for now" for an outage, but here
    # one batch causes it every time (a trigger, standing in for a statement too slow to finish).
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute(POISON.replace("'poison'", "'slow'").replace("XX000", "57014"))
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir, 1 << 20)
    spool.open()
    for n, device in enumerate(["good-1", "slow", "good-2"]):
        spool.append(batch_of(device, n))
    spool.close()

    pipeline, metrics = pipeline_for(migrated_db, spool_dir)
    running_pipeline(pipeline)
    wait_for("the segment replayed and deleted", lambda: not list(spool_dir.glob("*.spool")))
    assert count(migrated_db, "SELECT count(DISTINCT device_id) FROM readings") == 2
    assert count(migrated_db, "SELECT count(*) FROM readings") == 6
    assert metrics("pantau_ingest_database_errors_total", kind="transient") == 3
    assert metrics("pantau_ingest_dead_letters_total", kind="refused") == 1
    (dead,) = (spool_dir / "dead").glob("*.json")
    assert "failed 3 replays in a row (transient)" in dead.read_text()
