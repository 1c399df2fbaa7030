"""Every reading published ends up in `readings` exactly once, whatever fails mid-stream.

Each test publishes a numbered stream of 20,000 readings (2,000 QoS 1 messages of 10) to a real
Mosquitto, through a real `pantau run` process, into a real PostgreSQL, and breaks something in
the middle: Pantau killed with SIGKILL, the broker restarted, the database stopped for 20 s, the
spool filled (its limit, or its disk) while the database is down, the database switched to
read-only, the database hung (SIGSTOP) during a shutdown, Pantau restarted with a cold registry
cache while the database is down.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pantau.embedded import MosquittoBroker, PostgresCluster
from tests.fixtures.mqtt import Publisher
from tests.fixtures.pantau_proc import PantauProcess, ingest_env, wait_for

MESSAGES = 2_000
PER_MESSAGE = 10
READINGS = MESSAGES * PER_MESSAGE


def fault_env(cluster: PostgresCluster, broker: MosquittoBroker, spool: Path) -> dict[str, str]:
    return ingest_env(
        cluster,
        broker,
        spool,
        "fault",
        PANTAU_INGEST__DATABASE_RETRY_SECONDS="0.5",
        PANTAU_INGEST__DATABASE_RETRY_MAX_SECONDS="1",
        PANTAU_INGEST__BATCH_SIZE="2000",
        PANTAU_MQTT__RECONNECT_MAX_SECONDS="1",
    )


@pytest.fixture
def stack(
    private_postgres: PostgresCluster,
    mosquitto_factory: Callable[[], MosquittoBroker],
    tmp_path: Path,
) -> Iterator[tuple[PantauProcess, PostgresCluster, MosquittoBroker]]:
    broker = mosquitto_factory()
    pantau = PantauProcess(fault_env(private_postgres, broker, tmp_path / "spool"), tmp_path)
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


def sample(pantau: PantauProcess, name: str, **labels: str) -> float:
    """One sample of /metrics, labels and all (PantauProcess.metric takes unlabelled ones)."""
    text = httpx.get(f"http://127.0.0.1:{pantau.port}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    raise AssertionError(f"{name} {labels} not in /metrics")


def readiness(pantau: PantauProcess) -> dict[str, str]:
    checks: dict[str, str] = httpx.get(f"http://127.0.0.1:{pantau.port}/readyz", timeout=5).json()[
        "checks"
    ]
    return checks


def ingest_restarts(pantau: PantauProcess) -> float:
    return sample(pantau, "pantau_worker_restarts_total", worker="ingest")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB filesystem for the spool (tmpfs, mounted as root), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_spool_disk_full_with_database_down(
    private_postgres: PostgresCluster,
    mosquitto_factory: Callable[[], MosquittoBroker],
    small_disk: Path,
    tmp_path: Path,
) -> None:
    broker = mosquitto_factory()
    cluster = private_postgres
    # The whole stream takes 1.4 MB of spool: other files on the disk (1.25 MiB of them) leave
    # room for about half. The spool's own limit (1 GiB) is far away: the disk is what fills.
    (small_disk / "other-files").write_bytes(b"\0" * (1280 << 10))
    pantau = PantauProcess(fault_env(cluster, broker, small_disk / "spool"), tmp_path)
    pantau.start()
    pantau.wait_ready()
    try:
        cluster.stop("fast")
        stream = Stream(broker.port, rate=2000).start()
        stream.finish()  # the broker has all of them
        wait_for("disk full", lambda: pantau.metric("pantau_ingest_spool_disk_full") == 1)
        assert pantau.metric("pantau_ingest_spool_full") == 1
        assert readiness(pantau)["ingest"].startswith("spool disk full (No space left on device)")
        acked = pantau.metric("pantau_mqtt_messages_acknowledged_total")
        assert acked < MESSAGES  # the rest wait in the broker
        assert ingest_restarts(pantau) == 0  # holding, not crash-looping
        cluster.start()
        assert_exactly_once(cluster)
        wait_for("spool writable", lambda: pantau.metric("pantau_ingest_spool_disk_full") == 0)
        wait_for(
            "acks", lambda: pantau.metric("pantau_mqtt_messages_acknowledged_total") >= MESSAGES
        )
        assert ingest_restarts(pantau) == 0
    finally:
        pantau.stop()


def _read_only(cluster: PostgresCluster, on: bool) -> None:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = off")  # this session may change it
        if on:
            conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        else:
            conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
        conn.execute("SELECT pg_reload_conf()")


def test_database_read_only_mid_stream(
    stack: tuple[PantauProcess, PostgresCluster, MosquittoBroker],
) -> None:
    pantau, cluster, broker = stack
    stream = Stream(broker.port, rate=300).start()
    stream.at(0.2)
    _read_only(cluster, True)  # what a demoted primary does
    try:
        wait_for(
            "a read-only refusal",
            lambda: sample(pantau, "pantau_ingest_database_errors_total", kind="read_only") >= 1,
        )
        wait_for("spooling", lambda: pantau.metric("pantau_ingest_spool_bytes") > 0)
        assert "read only" in readiness(pantau)["ingest"]
        stream.at(0.6)
    finally:
        _read_only(cluster, False)
    stream.finish()
    assert_exactly_once(cluster)
    wait_for("the spool replayed", lambda: pantau.metric("pantau_ingest_spool_bytes") == 0)
    assert ingest_restarts(pantau) == 0


def _postgres_pids(cluster: PostgresCluster) -> list[int]:
    postmaster = int((cluster.data_dir / "postmaster.pid").read_text().split()[0])
    children = subprocess.run(
        ["pgrep", "-P", str(postmaster)], capture_output=True, text=True, check=False
    ).stdout.split()
    return [postmaster, *map(int, children)]


def test_shutdown_ends_while_the_database_hangs(
    private_postgres: PostgresCluster,
    mosquitto_factory: Callable[[], MosquittoBroker],
    tmp_path: Path,
) -> None:
    broker = mosquitto_factory()
    cluster = private_postgres
    env = fault_env(cluster, broker, tmp_path / "spool")
    env["PANTAU_SERVICE__SHUTDOWN_TIMEOUT_SECONDS"] = "3"
    pantau = PantauProcess(env, tmp_path)
    pantau.start()
    pantau.wait_ready()
    stream = Stream(broker.port, rate=400).start()
    try:
        stream.at(0.3)
        pids = _postgres_pids(cluster)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)  # a database that hangs: writes never answer
        try:
            # The writer is stuck in a write: what arrives piles up unwritten.
            wait_for("a pile", lambda: pantau.metric("pantau_ingest_pending_messages") >= 200)
            assert pantau.proc is not None
            started = time.monotonic()
            pantau.proc.send_signal(signal.SIGTERM)
            pantau.proc.wait(3 + 5)
            took = time.monotonic() - started
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        assert took < 3 + 5
        log = pantau.log.read_text()
        assert "ingest writer still busy" in log
        # What was not drained was never acknowledged: the broker redelivers it.
        pantau.start()
        stream.finish()
        assert_exactly_once(cluster)
    finally:
        pantau.stop()


def test_registered_devices_after_a_restart_with_the_database_down(
    private_postgres: PostgresCluster,
    mosquitto_factory: Callable[[], MosquittoBroker],
    tmp_path: Path,
) -> None:
    broker = mosquitto_factory()
    cluster = private_postgres
    env = fault_env(cluster, broker, tmp_path / "spool")
    env["PANTAU_INGEST__UNREGISTERED_DEVICES"] = "quarantine"
    pantau = PantauProcess(env, tmp_path)
    pantau.start()
    pantau.wait_ready()
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            for n in range(20):
                conn.execute("INSERT INTO devices (device_id) VALUES (%s)", (f"fault-{n:02d}",))
        messages = numbered_messages()
        publisher = Publisher(broker.port)
        publisher.wait(publisher.publish(messages[:200]))
        wait_for("rows", lambda: pantau.metric("pantau_ingest_readings_written_total") >= 2000)
        pantau.stop()
        pantau.start()  # a new process: its registry cache is cold
        pantau.wait_ready()
        cluster.stop("fast")
        stranger = ("bekasi-json/setu/stranger-1", orjson.dumps({"readings": {"r0": 1}}))
        publisher.wait(publisher.publish([*messages[200:], stranger]))
        wait_for(
            "everything spooled",
            lambda: pantau.metric("pantau_mqtt_messages_acknowledged_total") >= MESSAGES - 200 + 1,
        )
        publisher.close()
        cluster.start()
        assert_exactly_once(cluster)
        with psycopg.connect(cluster.dsn()) as conn:
            held = conn.execute(
                "SELECT detail FROM quarantine WHERE reason = 'unregistered_device'"
            ).fetchall()
        assert held == [("not in the registry: stranger-1",)]  # judged on replay, correctly
        assert ingest_restarts(pantau) == 0
    finally:
        pantau.stop()
