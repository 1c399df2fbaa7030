"""No poison pill, with a real `pantau run`, Mosquitto and PostgreSQL: the payload that used to
put the ingest worker into a restart loop (a NUL in a JSON key, which PostgreSQL's text refuses)
arrives among valid messages, with the database up and with it down (spooled, then replayed).
Every valid reading is stored exactly once and the worker never restarts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import psycopg
import pytest

from pantau.embedded import MosquittoBroker, PostgresCluster
from tests.fixtures.mqtt import Publisher
from tests.fixtures.pantau_proc import PantauProcess, ingest_env, wait_for

VALID = 60
NUL_PAYLOAD = b'{"readings":{"pm25":41,"t\\u0000":"x"}}'
RESTARTS = 'pantau_worker_restarts_total{worker="ingest"}'
ACKED = "pantau_mqtt_messages_acknowledged_total"


@pytest.fixture
def stack(
    private_postgres: PostgresCluster,
    mosquitto_factory: Callable[[], MosquittoBroker],
    tmp_path: Path,
) -> Iterator[tuple[PantauProcess, PostgresCluster, MosquittoBroker]]:
    broker = mosquitto_factory()
    pantau = PantauProcess(
        ingest_env(
            private_postgres,
            broker,
            tmp_path / "spool",
            "poison",
            PANTAU_INGEST__DATABASE_RETRY_SECONDS="0.5",
            PANTAU_INGEST__BATCH_MAX_WAIT_SECONDS="0.05",  # several batches, not one
        ),
        tmp_path,
    )
    pantau.start()
    pantau.wait_ready()
    try:
        yield pantau, private_postgres, broker
    finally:
        pantau.stop()


def publish_with_poison(port: int) -> None:
    """VALID numbered messages, the NUL payload in the middle, QoS 1, all taken by the broker."""
    base_ms = int(time.time() * 1000) - 60_000
    messages: list[tuple[str, bytes]] = [
        (
            f"bekasi-json/setu/poison-{n % 5}",
            orjson.dumps({"ts": base_ms + n, "readings": {"v": n}}),
        )
        for n in range(VALID)
    ]
    messages.insert(VALID // 2, ("bekasi-json/setu/poison-nul", NUL_PAYLOAD))
    publisher = Publisher(port)
    try:
        for topic, payload in messages:  # one at a time, so they spread over several batches
            publisher.wait(publisher.publish([(topic, payload)]))
    finally:
        publisher.close()


def stored(cluster: PostgresCluster) -> tuple[int, int, float, float] | None:
    with psycopg.connect(cluster.dsn(), connect_timeout=2) as conn:
        return conn.execute(
            "SELECT count(*), count(DISTINCT value), min(value), max(value) FROM readings"
            " WHERE device_id LIKE 'poison-_'"
        ).fetchone()


def assert_all_stored_once_and_poison_quarantined(
    pantau: PantauProcess, cluster: PostgresCluster
) -> None:
    wait_for("every valid reading stored", lambda: stored(cluster) == (VALID, VALID, 0, VALID - 1))
    wait_for("every message acknowledged", lambda: pantau.metric(ACKED) >= VALID + 1)
    with psycopg.connect(cluster.dsn()) as conn:
        poison = conn.execute(
            "SELECT metric, value FROM readings WHERE device_id = 'poison-nul'"
        ).fetchall()
        rows = conn.execute("SELECT payload, reason, detail, repeats FROM quarantine").fetchall()
    assert poison == [("pm25", 41.0)]  # the good half of the poisoned message
    assert len(rows) == 1
    payload, reason, detail, _ = rows[0]
    assert (payload, reason) == (NUL_PAYLOAD, "bad_value")
    assert "poison-nul/t\\u0000: value 'x' is not a number" in detail
    assert pantau.metric(RESTARTS) == 0
    assert pantau.metric('pantau_ingest_messages_quarantined_total{reason="bad_value"}') >= 1
    assert pantau.proc is not None
    assert pantau.proc.poll() is None


def test_nul_payload_with_the_database_up(
    stack: tuple[PantauProcess, PostgresCluster, MosquittoBroker],
) -> None:
    pantau, cluster, broker = stack
    publish_with_poison(broker.port)
    assert_all_stored_once_and_poison_quarantined(pantau, cluster)


def test_nul_payload_spooled_while_the_database_is_down_then_replayed(
    stack: tuple[PantauProcess, PostgresCluster, MosquittoBroker],
) -> None:
    pantau, cluster, broker = stack
    cluster.stop("fast")
    publish_with_poison(broker.port)
    # Spooled and acknowledged while the database is away, the poison among them.
    wait_for("all spooled and acknowledged", lambda: pantau.metric(ACKED) >= VALID + 1)
    assert pantau.metric("pantau_ingest_spool_bytes") > 0
    cluster.start()
    assert_all_stored_once_and_poison_quarantined(pantau, cluster)
    wait_for("spool replayed", lambda: pantau.metric("pantau_ingest_spool_bytes") == 0)
