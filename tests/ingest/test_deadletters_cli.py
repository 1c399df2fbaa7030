"""`pantau quarantine dead-letters --replay` writes with the configured quarantine policy."""

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from ingest.batch import Batch, Quarantined
from ingest.decoders import NO_MAPPING
from ingest.spool import Spool

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
PAYLOAD_BYTES = 400_000


def dead_letter_of_quarantined_payloads(spool_dir: Path, n: int) -> None:
    """A refused batch set aside in <spool_dir>/dead, carrying `n` quarantined payloads."""
    batch = Batch(
        quarantine=[
            Quarantined(
                NOW + timedelta(seconds=i),
                f"nowhere/{i}",
                bytes([i]) * PAYLOAD_BYTES,
                NO_MAPPING,
                "no mapping matches this topic",
                None,
                f"nowhere/{i}",
            )
            for i in range(n)
        ]
    )
    spool = Spool(spool_dir, 64 << 20)
    spool.open()
    spool.append(batch)
    (segment,) = spool.segments()
    (record,) = list(spool.records(segment))
    spool.set_aside(segment, record, "WriteFailed (XX000): refused for this test")
    spool.consumed(segment)
    spool.close()


def test_replay_trims_the_quarantine_to_ingest_quarantine_max_bytes(
    migrated_db: str, tmp_path: Path
) -> None:
    """The setting reaches the replay's writer: at 1 MiB (its least) 4 x 400 kB is trimmed to 2;
    with the default policy (1 GiB) all 4 stayed, and a setting over 1 GiB was cut to 1 GiB."""
    spool_dir = tmp_path / "spool"
    dead_letter_of_quarantined_payloads(spool_dir, 4)
    replayed = subprocess.run(
        [sys.executable, "-m", "pantau", "quarantine", "dead-letters", "--replay"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            "PATH": os.environ["PATH"],
            "PANTAU_DATABASE__URL": migrated_db,
            "PANTAU_INGEST__SPOOL_DIR": str(spool_dir),
            "PANTAU_INGEST__QUARANTINE_MAX_BYTES": str(1 << 20),
        },
    )
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 1 (0 new readings)" in replayed.stdout, replayed.stdout + replayed.stderr
    with psycopg.connect(migrated_db) as conn:
        kept = conn.execute("SELECT topic FROM quarantine ORDER BY received_at").fetchall()
        (size,) = conn.execute("SELECT sum(octet_length(payload)) FROM quarantine").fetchone()
    assert size <= 1 << 20
    assert kept == [("nowhere/2",), ("nowhere/3",)]  # the oldest went first


def test_every_ingest_process_dead_letters_are_listed_and_replayed(
    migrated_db: str, tmp_path: Path
) -> None:
    """With ingest.processes > 1, process i sets aside into <spool_dir>/<i>/dead: the command
    lists and replays those too, not only <spool_dir>/dead."""
    spool_dir = tmp_path / "spool"
    dead_letter_of_quarantined_payloads(spool_dir, 1)
    dead_letter_of_quarantined_payloads(spool_dir / "1", 2)
    env = {
        "PATH": os.environ["PATH"],
        "PANTAU_DATABASE__URL": migrated_db,
        "PANTAU_INGEST__SPOOL_DIR": str(spool_dir),
    }

    def dead_letters(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "pantau", "quarantine", "dead-letters", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    listed = dead_letters()
    assert "2 dead letters" in listed, listed
    assert str(spool_dir / "dead") in listed
    assert str(spool_dir / "1" / "dead") in listed
    assert "replayed 2 (0 new readings)" in dead_letters("--replay")
    assert "0 dead letters" in dead_letters()
    with psycopg.connect(migrated_db) as conn:
        topics = conn.execute("SELECT topic FROM quarantine ORDER BY topic").fetchall()
    # the two letters' nowhere/0 are one payload at one time: stored once
    assert topics == [("nowhere/0",), ("nowhere/1",)]
