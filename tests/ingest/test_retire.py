"""Changing `ingest.processes` and restarting loses nothing and duplicates nothing
(ingest/layout.py, ingest/retire.py).

A real `pantau run`, Mosquitto and PostgreSQL, and the numbered stream of test_faults (20,000
readings in 2,000 QoS 1 messages) in three parts: the first while the database is down (spooled
and acknowledged in the first layout's spools), the second while Pantau is stopped (queued by the
broker for the first layout's sessions), the third once Pantau runs again with another number of
processes and the database up. Every reading must be stored exactly once, the retired sessions
gone from the broker (the third part, on the same shared subscription, would otherwise be split
with them), and the retired spools empty.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import CollectorRegistry

from ingest.batch import Message
from ingest.metrics import IngestMetrics
from ingest.retire import Drain
from pantau.embedded import MosquittoBroker, PostgresCluster
from pantau.settings import MqttSettings
from tests.fixtures.mqtt import Publisher
from tests.fixtures.pantau_proc import PantauProcess, wait_for
from tests.ingest.test_faults import assert_exactly_once, fault_env, numbered_messages
from tests.ingest.test_processes import _series
from tests.ingest.test_start_database_down import readyz

FIRST, SECOND = 700, 1400  # the three parts of the stream: [:FIRST], [FIRST:SECOND], [SECOND:]


def session_present(port: int, client_id: str) -> bool:
    """Whether the broker keeps a session for `client_id`. (Connects without a clean start and
    a session expiry of 0: the look itself leaves no session behind.)"""
    seen: list[bool] = []
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
    )
    client.on_connect = lambda c, u, flags, rc, p: seen.append(bool(flags.session_present))
    client.connect("127.0.0.1", port, clean_start=False)
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        client.loop(0.1)
    client.disconnect()
    assert seen, f"no CONNACK for {client_id}"
    return seen[0]


def _make_session(port: int, client_id: str, protocol: str, topic_filter: str) -> None:
    """A persistent session subscribed to `topic_filter`, then gone (as a retired process)."""
    v5 = protocol == "5"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        clean_session=None if v5 else False,
    )
    subscribed: list[int] = []
    client.on_subscribe = lambda c, u, mid, rc, p: subscribed.append(mid)
    if v5:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        client.connect("127.0.0.1", port, clean_start=False, properties=props)
    else:
        client.connect("127.0.0.1", port)
    client.loop_start()
    client.subscribe(topic_filter, qos=1)
    wait_for("subscribed", lambda: bool(subscribed), 10)
    client.disconnect()
    client.loop_stop()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_drain_takes_the_queue_then_ends_the_session(
    mosquitto_factory: Callable[[], MosquittoBroker], protocol: str
) -> None:
    """The drain alone: what the broker queued for a retired session reaches the pipeline (here
    a list that acknowledges at once), and the session is gone afterwards, over both protocols;
    a session that never was costs one connection."""
    broker = mosquitto_factory()
    client_id = f"retired-{uuid.uuid4().hex[:6]}"
    _make_session(broker.port, client_id, protocol, "$share/pantau/drain/#")
    publisher = Publisher(broker.port)
    publisher.wait(publisher.publish([(f"drain/{n}", str(n)) for n in range(300)]))
    publisher.close()

    received: list[str] = []
    ended: list[str] = []
    settings = MqttSettings(
        host="127.0.0.1", port=broker.port, client_id=client_id, protocol=protocol
    )
    metrics = IngestMetrics.create(CollectorRegistry())

    def take(message: Message) -> None:
        received.append(message.payload.decode())
        drain.ack([(message.mid, message.qos, message.generation)])

    drain = Drain(
        settings, ["$share/pantau/drain/#"], take, metrics, itertools.count(1), ended.append
    )
    ready = threading.Event()
    ready.set()
    started = time.monotonic()
    drain.run(threading.Event(), ready)
    assert ended == [client_id]
    assert time.monotonic() - started < 10
    assert sorted(set(received), key=int) == [str(n) for n in range(300)]
    assert metrics.retired_sessions._value.get() == 1
    assert not session_present(broker.port, client_id)

    never = Drain(
        settings.model_copy(update={"client_id": f"never-{uuid.uuid4().hex[:6]}"}),
        ["$share/pantau/drain/#"],
        take,
        metrics,
        itertools.count(100),
        ended.append,
    )
    never.run(threading.Event(), ready)
    assert len(ended) == 2
    assert metrics.retired_sessions._value.get() == 1  # nothing was ended: nothing counted
    assert not session_present(broker.port, never.client_id)


def _acked(pantau: PantauProcess) -> float:
    per_process = _series(pantau, "pantau_mqtt_messages_acknowledged_total")
    return (
        sum(per_process.values())
        if per_process
        else pantau.metric("pantau_mqtt_messages_acknowledged_total")
    )


def _retired(pantau: PantauProcess) -> float:
    name = "pantau_ingest_retired_sessions_total"
    per_process = _series(pantau, name)
    return sum(per_process.values()) if per_process else pantau.metric(name)


def _change_layout(
    cluster: PostgresCluster,
    broker: MosquittoBroker,
    tmp_path: Path,
    before: int,
    after: int,
) -> tuple[PantauProcess, dict[str, str]]:
    """The first two parts of the stream as the module says; returns Pantau running with
    `after` processes and the database up, the third part not published yet."""
    cluster.stop("fast")
    spool = tmp_path / "spool"
    env = fault_env(cluster, broker, spool)
    env["PANTAU_MQTT__SHARED_GROUP"] = "pantau"  # one group for every layout, as in production
    env["PANTAU_INGEST__PROCESSES"] = str(before)
    messages = numbered_messages()
    (tmp_path / "first").mkdir()
    first = PantauProcess(env, tmp_path / "first")
    first.start()
    publisher = Publisher(broker.port)
    try:
        wait_for("subscribed", lambda: readyz(first)["checks"]["broker"] == "ok", 60)
        publisher.wait(publisher.publish(messages[:FIRST]))
        wait_for("spooled and acknowledged", lambda: _acked(first) >= FIRST, 30)
    finally:
        assert first.stop() == 0, first.log.read_text()[-3000:]
    assert any(spool.rglob("*.spool")), "nothing spooled while the database was down"
    # Queued by the broker for the first layout's sessions while no Pantau runs.
    publisher.wait(publisher.publish(messages[FIRST:SECOND]))
    publisher.close()
    cluster.start()
    env["PANTAU_INGEST__PROCESSES"] = str(after)
    (tmp_path / "second").mkdir()
    second = PantauProcess(env, tmp_path / "second")
    second.start()
    try:
        second.wait_ready(60)
    except AssertionError:
        second.stop()
        raise
    return second, env


def _third_part(broker: MosquittoBroker) -> None:
    publisher = Publisher(broker.port)
    try:
        publisher.wait(publisher.publish(numbered_messages()[SECOND:]))
    finally:
        publisher.close()


def test_two_processes_to_one(
    private_postgres: PostgresCluster,
    mosquitto_factory: Callable[[], MosquittoBroker],
    tmp_path: Path,
) -> None:
    broker = mosquitto_factory()
    pantau, env = _change_layout(private_postgres, broker, tmp_path, 2, 1)
    cid = env["PANTAU_MQTT__CLIENT_ID"]
    spool = tmp_path / "spool"
    try:
        wait_for("both retired sessions drained and ended", lambda: _retired(pantau) == 2, 30)
        _third_part(broker)
        assert_exactly_once(private_postgres, timeout=30)
        wait_for("spool replayed", lambda: pantau.metric("pantau_ingest_spool_bytes") == 0, 20)
        log = pantau.log.read_text()
    finally:
        assert pantau.stop() == 0, pantau.log.read_text()[-3000:]
    assert not session_present(broker.port, f"{cid}-0")
    assert not session_present(broker.port, f"{cid}-1")
    assert session_present(broker.port, cid)  # the new layout's own, kept
    assert not (spool / "0").exists()
    assert not (spool / "1").exists()
    assert not any(spool.rglob("*.spool"))
    record = orjson.loads((spool / "layout.json").read_bytes())
    assert list(record["sessions"]) == [cid]
    assert record["retiring"] == {}
    assert "of an earlier ingest.processes layout" in log
    assert f"retired MQTT session {cid}-0 drained" in log
    assert f"retired MQTT session {cid}-1 drained" in log


def test_one_process_to_two(
    private_postgres: PostgresCluster,
    mosquitto_factory: Callable[[], MosquittoBroker],
    tmp_path: Path,
) -> None:
    broker = mosquitto_factory()
    pantau, env = _change_layout(private_postgres, broker, tmp_path, 1, 2)
    cid = env["PANTAU_MQTT__CLIENT_ID"]
    spool = tmp_path / "spool"
    try:
        wait_for("the retired session drained and ended", lambda: _retired(pantau) == 1, 30)
        _third_part(broker)
        assert_exactly_once(private_postgres, timeout=30)
        wait_for(
            "spools replayed",
            lambda: set(_series(pantau, "pantau_ingest_spool_bytes").values()) == {0.0},
            20,
        )
        log = pantau.log.read_text()
    finally:
        assert pantau.stop() == 0, pantau.log.read_text()[-3000:]
    assert not session_present(broker.port, cid)
    assert session_present(broker.port, f"{cid}-0")
    assert session_present(broker.port, f"{cid}-1")
    assert not any(spool.rglob("*.spool"))
    record = orjson.loads((spool / "layout.json").read_bytes())
    assert sorted(record["sessions"]) == [f"{cid}-0", f"{cid}-1"]
    assert record["retiring"] == {}
    assert f"retired MQTT session {cid} drained" in log


def test_unchanged_layout_retires_nothing(
    private_postgres: PostgresCluster,
    mosquitto_factory: Callable[[], MosquittoBroker],
    tmp_path: Path,
) -> None:
    """A restart with the same `ingest.processes`: no spool moved, no session drained; what was
    queued for its own sessions meanwhile arrives through them."""
    broker = mosquitto_factory()
    pantau, _ = _change_layout(private_postgres, broker, tmp_path, 2, 2)
    try:
        _third_part(broker)
        assert_exactly_once(private_postgres, timeout=30)
        log = pantau.log.read_text()
        assert _retired(pantau) == 0
    finally:
        assert pantau.stop() == 0, pantau.log.read_text()[-3000:]
    assert "earlier ingest" not in log
    assert "retired MQTT session" not in log
    record = orjson.loads((tmp_path / "spool" / "layout.json").read_bytes())
    assert record["retiring"] == {}


def test_pantau_retire_empties_a_stopped_instance(
    private_postgres: PostgresCluster,
    mosquitto_factory: Callable[[], MosquittoBroker],
    tmp_path: Path,
) -> None:
    """`pantau retire` on an instance of 2 processes retired for good: its spools replayed, its
    sessions drained and ended, every reading stored once."""
    broker = mosquitto_factory()
    cluster = private_postgres
    cluster.stop("fast")
    spool = tmp_path / "spool"
    env = fault_env(cluster, broker, spool)
    env["PANTAU_INGEST__PROCESSES"] = "2"
    cid = env["PANTAU_MQTT__CLIENT_ID"]
    messages = numbered_messages()
    pantau = PantauProcess(env, tmp_path)
    pantau.start()
    publisher = Publisher(broker.port)
    try:
        wait_for("subscribed", lambda: readyz(pantau)["checks"]["broker"] == "ok", 60)
        publisher.wait(publisher.publish(messages[:FIRST]))
        wait_for("spooled and acknowledged", lambda: _acked(pantau) >= FIRST, 30)
    finally:
        assert pantau.stop() == 0, pantau.log.read_text()[-3000:]
    publisher.wait(publisher.publish(messages[FIRST:]))  # queued for the stopped instance
    publisher.close()
    cluster.start()
    cli_env = {**pantau.env, "PANTAU_LOG__LEVEL": "INFO"}
    migrate = subprocess.run(
        [sys.executable, "-m", "pantau", "db", "migrate"], env=cli_env, capture_output=True
    )
    assert migrate.returncode == 0, migrate.stderr.decode()[-2000:]
    result = subprocess.run(
        [sys.executable, "-m", "pantau", "retire", "--timeout", "60"],
        env=cli_env,
        capture_output=True,
        timeout=90,
    )
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()[-3000:]
    assert f"session {cid}-0: drained and ended" in out
    assert f"session {cid}-1: drained and ended" in out
    assert_exactly_once(cluster, timeout=10)
    for client_id in (cid, f"{cid}-0", f"{cid}-1"):
        assert not session_present(broker.port, client_id), client_id
    assert not any(spool.rglob("*.spool"))
