"""One message, two values for one (device, metric, time): quarantined, the rest written.

Through the real Processor and Writer into a throwaway PostgreSQL, as a message takes them.
"""

from datetime import UTC, datetime

import orjson
import psycopg
import pytest

from ingest.batch import Message, Processor
from ingest.quarantine import list_entries
from ingest.writer import Writer
from pantau.mappings import MappingSettings, default_mappings

NOW = datetime.now(UTC).replace(microsecond=0)
GATEWAY = MappingSettings(
    name="gateway", topic="gw/{site}", format="json", device="$.id", metrics={"level": "$.lvl"}
)


@pytest.fixture
def db(migrated_db: str) -> str:
    return migrated_db


def store(db: str, topic: str, payload: bytes) -> None:
    processor = Processor.from_settings([*default_mappings(), GATEWAY], 300, 7)
    writer = Writer(db)
    try:
        writer.write(processor.batch([Message(topic, payload, NOW)]))
    finally:
        writer.close()


def readings(db: str) -> list[tuple[object, ...]]:
    with psycopg.connect(db) as conn:
        return conn.execute(
            "SELECT device_id, metric, value FROM readings ORDER BY device_id, metric"
        ).fetchall()


def test_a_colliding_senml_pack_is_quarantined_and_the_rest_is_stored(db: str) -> None:
    # RFC 8428 5.1.6 (two devices in one pack) plus a value of its own, under a topic device
    bt = NOW.timestamp()
    pack = [
        {"bn": "2001:db8::2/", "bt": bt, "n": "temperature", "u": "Cel", "v": 25.2},
        {"n": "humidity", "u": "%RH", "v": 30},
        {"bn": "2001:db8::1/", "n": "temperature", "u": "Cel", "v": 12.3},
        {"n": "humidity", "u": "%RH", "v": 67},
        {"n": "battery_v", "v": 3.7},
    ]
    payload = orjson.dumps(pack)
    store(db, "bekasi-senml/setu/gw-setu-01", payload)
    assert readings(db) == [("gw-setu-01", "battery_v", 3.7)]
    with psycopg.connect(db) as conn:
        entries = list_entries(conn)
    assert len(entries) == 1
    entry = entries[0]
    assert (entry.topic, entry.reason, entry.payload) == (
        "bekasi-senml/setu/gw-setu-01",
        "conflicting_readings",
        payload,
    )
    assert "gw-setu-01/temperature" in entry.detail
    assert "25.2 and 12.3" in entry.detail
    assert "gw-setu-01/humidity" in entry.detail
    assert "30.0 and 67.0" in entry.detail


def test_a_gateway_array_with_two_values_for_one_key(db: str) -> None:
    payload = orjson.dumps(
        [{"id": "wl-1", "lvl": 10}, {"id": "wl-2", "lvl": 20}, {"id": "wl-1", "lvl": 11}]
    )
    store(db, "gw/setu", payload)
    assert readings(db) == [("wl-2", "level", 20.0)]
    with psycopg.connect(db) as conn:
        [entry] = list_entries(conn)
    assert entry.reason == "conflicting_readings"
    assert "wl-1/level" in entry.detail
    assert "10.0 and 11.0" in entry.detail


def test_the_same_value_twice_is_kept_once_and_is_no_problem(db: str) -> None:
    payload = orjson.dumps([{"id": "wl-1", "lvl": 10}, {"id": "wl-1", "lvl": 10.0}])
    store(db, "gw/setu", payload)
    assert readings(db) == [("wl-1", "level", 10.0)]
    with psycopg.connect(db) as conn:
        assert list_entries(conn) == []
