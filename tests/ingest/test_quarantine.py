"""Quarantine end to end: bad payloads kept whole, listed, replayed after the mapping is fixed."""

from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from ingest.batch import Message, Processor
from ingest.quarantine import list_entries, replay
from ingest.writer import Writer
from pantau.mappings import MappingSettings, default_mappings
from tests.fixtures.servers import run_pantau

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def db(migrated_db: str) -> str:
    return migrated_db


def store(db: str, *messages: tuple[str, bytes]) -> None:
    processor = Processor.from_settings(default_mappings(), 300, 7)
    writer = Writer(db)
    writer.write(processor.batch(Message(t, p, NOW) for t, p in messages))
    writer.close()


VENDOR = MappingSettings(
    name="vendor-x",
    topic="vendorx/{device}",
    format="json",
    metrics={"level_cm": "$.lvl"},
    convert={"level_cm": "m->cm"},
)


def test_replay_after_the_mapping_is_fixed(db: str) -> None:
    # vendorx/... is covered by no mapping yet; the number payload is simply bad.
    store(db, ("vendorx/wl-9", b'{"lvl": 1.5}'), ("bekasi/setu/wl-1/level", b"n/a"))
    with psycopg.connect(db) as conn:
        entries = list_entries(conn)
    assert {(e.topic, e.reason) for e in entries} == {
        ("vendorx/wl-9", "no_mapping"),
        ("bekasi/setu/wl-1/level", "malformed_payload"),
    }
    assert {e.payload for e in entries} == {b'{"lvl": 1.5}', b"n/a"}

    fixed = Processor.from_settings([*default_mappings(), VENDOR], 300, 7)
    writer = Writer(db)
    with psycopg.connect(db) as conn:
        report = replay(conn, writer, fixed)
        assert (report.replayed, report.resolved, report.readings) == (2, 1, 1)
        assert report.still == {"malformed_payload": 1}
        assert [e.topic for e in list_entries(conn)] == ["bekasi/setu/wl-1/level"]
        assert len(list_entries(conn, include_resolved=True)) == 2
        reading = conn.execute("SELECT time, device_id, metric, value FROM readings").fetchall()
    assert reading == [(NOW, "wl-9", "level_cm", 150.0)]
    # Replaying again finds nothing new to do.
    with psycopg.connect(db) as conn:
        again = replay(conn, writer, fixed)
    assert (again.replayed, again.resolved) == (1, 0)
    writer.close()


def test_replay_by_reason(db: str) -> None:
    store(db, ("vendorx/wl-9", b'{"lvl": 1}'), ("bekasi/setu/wl-1/level", b"n/a"))
    fixed = Processor.from_settings([*default_mappings(), VENDOR], 300, 7)
    writer = Writer(db)
    with psycopg.connect(db) as conn:
        report = replay(conn, writer, fixed, reasons=["malformed_payload"])
    assert (report.replayed, report.resolved) == (1, 0)
    writer.close()


cli = run_pantau


def test_quarantine_commands(db: str, tmp_path: Path) -> None:
    store(db, ("vendorx/wl-9", b'{"lvl": 2}'))
    listed = cli("quarantine", "list", db=db, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "no_mapping  vendorx/wl-9" in listed.stdout
    assert 'payload: {"lvl": 2}' in listed.stdout
    assert listed.stdout.rstrip().endswith("1 in quarantine (no_mapping: 1)")

    bad = cli("quarantine", "replay", "--reason", "typo", db=db, cwd=tmp_path)
    assert bad.returncode == 2
    assert "--reason 'typo': expected one of no_mapping" in bad.stderr

    (tmp_path / "pantau.toml").write_text(
        '[[ingest.mappings]]\nname = "vendor-x"\ntopic = "vendorx/{device}"\nformat = "json"\n'
        'metrics = { level_cm = "$.lvl" }\nconvert = { level_cm = "m->cm" }\n'
    )
    replayed = cli("quarantine", "replay", "--reason", "no_mapping", db=db, cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 1: 1 resolved (1 new readings)" in replayed.stdout
    assert cli("quarantine", "list", db=db, cwd=tmp_path).stdout.strip() == "0 in quarantine"


async def test_old_quarantine_is_purged(db: str) -> None:
    from ingest.quarantine import purge

    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO quarantine (received_at, topic, payload, reason) VALUES"
            " (now() - interval '100 days', 'old', 'x', 'bad_value'),"
            " (now() - interval '10 days', 'recent', 'y', 'bad_value')"
        )
        assert await purge(conn, 90) == 1
        rows = await (await conn.execute("SELECT topic FROM quarantine")).fetchall()
    assert rows == [("recent",)]
