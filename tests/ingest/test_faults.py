"""Every reading published ends up in `readings` exactly once, whatever fails mid-stream.

Each test publishes a numbered stream of 20,000 readings (2,000 QoS 1 messages of 10) to a real
Mosquitto, through a real `pantau run` process, into a real PostgreSQL, and breaks something in
the middle: Pantau killed with SIGKILL, the broker restarted, the database stopped for 20 s, the
spool filled while the database is down.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest

from pantau.embedded import MosquittoBroker, PostgresCluster
from tests.fixtures.mqtt import Publisher
from tests.fixtures.pantau_proc import PantauProcess

MESSAGES = 2_000
PER_MESSAGE = 10
READINGS = MESSAGES * PER_MESSAGE


@pytest.fixture
def stack(
    private_postgres: PostgresCluster,
    mosquitto_factory: Callable[[], MosquittoBroker],
    tmp_path: Path,
) -> Iterator[tuple[PantauProcess, PostgresCluster, MosquittoBroker]]:
    broker = mosquitto_factory()
    pantau = PantauProcess(
        {
            "PANTAU_DATABASE__URL": private_postgres.dsn(),
            "PANTAU_MQTT__HOST": "127.0.0.1",
            "PANTAU_MQTT__PORT": str(broker.port),
            "PANTAU_MQTT__CLIENT_ID": f"pantau-fault-{uuid.uuid4().hex[:6]}",
            "PANTAU_INGEST__SPOOL_DIR": str(tmp_path / "spool"),
            "PANTAU_INGEST__DATABASE_RETRY_SECONDS": "0.5",
            "PANTAU_INGEST__BATCH_SIZE": "2000",
            "PANTAU_MQTT__RECONNECT_MAX_SECONDS": "1",
            "PANTAU_DATABASE__CONNECT_TIMEOUT_SECONDS": "2",
        },
        tmp_path,
    )
    pantau.start()
    pantau.wait_ready()
    yield pantau, private_postgres, broker
    pantau.stop()


def numbered_messages() -> list[tuple[str, bytes]]:
    base_ms = int(time.time() * 1000) - 60_000
    out = []
    for n in range(MESSAGES):
        readings = {f"r{j}": n * PER_MESSAGE + j for j in range(PER_MESSAGE)}
        doc = {"ts": base_ms + n, "readings": readings}
        out.append((f"bekasi-json/setu/fault-{n % 20:02d}", orjson.dumps(doc)))
    return out


class Stream:
    """Publishes the numbered stream at a steady pace in a thread; `at(fraction)` waits until
    that share of it has been handed to the broker."""

    def __init__(self, broker_port: int, rate: float = 400.0) -> None:
        self.publisher = Publisher(broker_port)
        self.sent = 0
        self._rate = rate
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._infos: list = []  # type: ignore[type-arg]

    def start(self) -> Stream:
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        for topic, payload in numbered_messages():
            info = self.publisher.client.publish(topic, payload, qos=1)
            while info.rc == mqtt.MQTT_ERR_NO_CONN:
                # The broker is away. Like a real sensor, publish again once it is back (the
                # first attempt may still go out too: a duplicate Pantau must absorb).
                time.sleep(0.1)
                info = self.publisher.client.publish(topic, payload, qos=1)
            self._infos.append(info)
            self.sent += 1
            delay = started + self.sent / self._rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def at(self, fraction: float) -> None:
        while self.sent < MESSAGES * fraction:
            time.sleep(0.01)

    def finish(self) -> None:
        self._thread.join(60)
        for info in self._infos:
            info.wait_for_publish(60)
        self.publisher.close()


def assert_exactly_once(cluster: PostgresCluster, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(cluster.dsn(), connect_timeout=2) as conn:
                last = conn.execute(
                    "SELECT count(*), count(DISTINCT value), min(value), max(value)"
                    " FROM readings WHERE device_id LIKE 'fault-%'"
                ).fetchone()
        except psycopg.OperationalError:
            last = None
        if last and last[1] == READINGS:
            break
        time.sleep(0.5)
    assert last == (READINGS, READINGS, 0.0, READINGS - 1.0)


def test_kill_9_mid_stream(stack: tuple[PantauProcess, PostgresCluster, MosquittoBroker]) -> None:
    pantau, cluster, broker = stack
    stream = Stream(broker.port).start()
    stream.at(0.4)
    pantau.kill()
    time.sleep(0.5)
    pantau.start()
    stream.finish()
    pantau.wait_ready()
    assert_exactly_once(cluster)


def test_broker_restart_mid_stream(
    stack: tuple[PantauProcess, PostgresCluster, MosquittoBroker],
) -> None:
    pantau, cluster, broker = stack
    stream = Stream(broker.port).start()
    stream.at(0.3)
    broker.stop()  # a clean stop: Mosquitto saves its sessions and queued messages
    time.sleep(2)
    broker.start()
    stream.finish()
    assert_exactly_once(cluster)
    assert pantau.metric("pantau_mqtt_reconnects_total") >= 1


def test_database_down_for_20_seconds(
    stack: tuple[PantauProcess, PostgresCluster, MosquittoBroker],
) -> None:
    pantau, cluster, broker = stack
    stream = Stream(broker.port, rate=150).start()  # still publishing while the database is away
    stream.at(0.2)
    cluster.stop("fast")
    time.sleep(5)
    assert pantau.metric("pantau_ingest_spool_bytes") > 0  # spooling, not dropping
    assert pantau.metric("pantau_ingest_database_connected") == 0
    time.sleep(15)
    cluster.start()
    stream.finish()
    assert_exactly_once(cluster)
    deadline = time.monotonic() + 20
    while pantau.metric("pantau_ingest_spool_bytes") > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pantau.metric("pantau_ingest_spool_bytes") == 0


def test_spool_full_with_database_down(
    private_postgres: PostgresCluster,
    mosquitto_factory: Callable[[], MosquittoBroker],
    tmp_path: Path,
) -> None:
    broker = mosquitto_factory()
    cluster = private_postgres
    pantau = PantauProcess(
        {
            "PANTAU_DATABASE__URL": cluster.dsn(),
            "PANTAU_MQTT__PORT": str(broker.port),
            "PANTAU_MQTT__CLIENT_ID": f"pantau-full-{uuid.uuid4().hex[:6]}",
            "PANTAU_INGEST__SPOOL_DIR": str(tmp_path / "spool"),
            "PANTAU_INGEST__SPOOL_MAX_BYTES": "65536",
            "PANTAU_INGEST__DATABASE_RETRY_SECONDS": "0.5",
            "PANTAU_DATABASE__CONNECT_TIMEOUT_SECONDS": "2",
        },
        tmp_path,
    )
    pantau.start()
    pantau.wait_ready()
    try:
        cluster.stop("fast")
        stream = Stream(broker.port, rate=2000).start()
        stream.finish()  # the broker has all of them
        time.sleep(3)
        acked = pantau.metric("pantau_mqtt_messages_acknowledged_total")
        assert acked < MESSAGES  # the spool is full: the rest wait in the broker
        assert pantau.metric("pantau_ingest_spool_bytes") <= 65536
        time.sleep(2)
        assert pantau.metric("pantau_mqtt_messages_acknowledged_total") == acked
        cluster.start()
        assert_exactly_once(cluster)
        assert pantau.metric("pantau_mqtt_messages_acknowledged_total") >= MESSAGES
    finally:
        pantau.stop()
