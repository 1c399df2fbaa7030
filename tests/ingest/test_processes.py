"""`ingest.processes` = 2: two ingest processes on one shared subscription, each with its own
session, writer and spool, supervised by the service.

A real `pantau run`, a real Mosquitto and a real PostgreSQL: the numbered stream of test_faults
(20,000 readings in 2,000 QoS 1 messages) goes through both processes; one of them is killed with
SIGKILL mid-stream; the service starts it again (counted), and every reading is in `readings`
exactly once. The children's metrics reach the parent's /metrics with a `process` label.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ingest.processes import child_settings
from pantau.embedded import MosquittoBroker, PostgresCluster
from pantau.settings import Settings
from tests.fixtures.pantau_proc import PantauProcess, wait_for
from tests.ingest.test_faults import Stream, assert_exactly_once, fault_env


def test_child_settings_are_stable_per_index(tmp_path: Path) -> None:
    settings = Settings(
        mqtt={"client_id": "pantau-1"},  # type: ignore[arg-type]
        ingest={"spool_dir": tmp_path / "spool", "processes": 2},  # type: ignore[arg-type]
    )
    first = child_settings(settings, 1)
    assert first.mqtt.client_id == "pantau-1-1"
    assert first.mqtt.shared_group == "pantau"  # a shared subscription even when none is set
    assert first.ingest.spool_dir == tmp_path / "spool" / "1"
    assert first.ingest.processes == 1
    assert child_settings(settings, 1) == first  # the same session at every start
    assert child_settings(settings, 0).mqtt.client_id == "pantau-1-0"
    grouped = settings.model_copy(
        update={"mqtt": settings.mqtt.model_copy(update={"shared_group": "bekasi"})}
    )
    assert child_settings(grouped, 0).mqtt.shared_group == "bekasi"


def _series(pantau: PantauProcess, name: str) -> dict[str, float]:
    """The value of sample `name` per `process` label on the parent's /metrics."""
    text = httpx.get(f"http://127.0.0.1:{pantau.port}/metrics", timeout=5).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and "process" in sample.labels:
                out[sample.labels["process"]] = sample.value
    return out


def _child_pid(pantau: PantauProcess, index: int, after: int = 0) -> int:
    """The pid of ingest process `index`, from the service's log (its latest start)."""
    pids = re.findall(rf"ingest process {index} started \(pid (\d+)\)", pantau.log.read_text())
    assert len(pids) > after, f"ingest process {index} started {len(pids)} times"
    return int(pids[-1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_two_processes_one_killed_mid_stream(
    private_postgres: PostgresCluster,
    mosquitto_factory: Callable[[], MosquittoBroker],
    tmp_path: Path,
) -> None:
    broker = mosquitto_factory()
    spool = tmp_path / "spool"
    env = fault_env(private_postgres, broker, spool)
    env["PANTAU_INGEST__PROCESSES"] = "2"
    env["PANTAU_SERVICE__RESTART_BACKOFF_INITIAL_SECONDS"] = "0.2"
    pantau = PantauProcess(env, tmp_path)
    pantau.start()
    try:
        pantau.wait_ready(60)  # ready only once both children report a connected session
        victim = _child_pid(pantau, 0)
        survivor = _child_pid(pantau, 1)

        stream = Stream(broker.port).start()
        stream.at(0.4)
        received = "pantau_mqtt_messages_received_total"
        wait_for(
            "both processes receive a share",
            lambda: (
                sorted(_series(pantau, received)) == ["0", "1"]
                and all(_series(pantau, received).values())
            ),
        )
        os.kill(victim, signal.SIGKILL)
        wait_for(
            "the killed process is started again",
            lambda: _child_pid(pantau, 0, after=1) != victim,
        )
        stream.finish()
        assert_exactly_once(private_postgres)

        assert _alive(survivor)  # the other process was not touched
        restarts = _series(pantau, "pantau_ingest_process_restarts_total")
        assert restarts == {"0": 1.0, "1": 0.0}
        wait_for(
            "both processes up again",
            lambda: _series(pantau, "pantau_ingest_process_up") == {"0": 1.0, "1": 1.0},
        )
        # Each process has its own spool directory inside the spool dir.
        assert {p.name for p in spool.iterdir() if p.is_dir()} >= {"0", "1"}
        log = pantau.log.read_text()
        assert f"client id {env['PANTAU_MQTT__CLIENT_ID']}-0" in log
        assert f"client id {env['PANTAU_MQTT__CLIENT_ID']}-1" in log

        children = [_child_pid(pantau, 0), survivor]
    finally:
        code = pantau.stop()
    assert code == 0, pantau.log.read_text()[-3000:]
    # Drained and gone with the service: no ingest process outlives it.
    for pid in children:
        wait_for(f"ingest process {pid} gone", lambda pid=pid: not _alive(pid), timeout=10)
    assert "did not stop" not in pantau.log.read_text()


def test_drained_on_shutdown_nothing_lost(
    private_postgres: PostgresCluster,
    mosquitto_factory: Callable[[], MosquittoBroker],
    tmp_path: Path,
) -> None:
    """SIGTERM to the service mid-stream: both processes drain; a new service resumes their
    sessions and spools, and nothing is lost or doubled."""
    broker = mosquitto_factory()
    env = fault_env(private_postgres, broker, tmp_path / "spool")
    env["PANTAU_INGEST__PROCESSES"] = "2"
    pantau = PantauProcess(env, tmp_path)
    pantau.start()
    pantau.wait_ready(60)
    stream = Stream(broker.port).start()
    stream.at(0.5)
    assert pantau.stop() == 0, pantau.log.read_text()[-3000:]
    pantau.start()
    try:
        stream.finish()
        pantau.wait_ready(60)
        assert_exactly_once(private_postgres)
    finally:
        pantau.stop()


def test_service_killed_children_follow(
    private_postgres: PostgresCluster,
    mosquitto_factory: Callable[[], MosquittoBroker],
    tmp_path: Path,
) -> None:
    """SIGKILL to the service itself mid-stream: its ingest processes see the pipe to it close,
    drain and exit (none is left holding a session the next start needs), and the next start
    takes over their sessions and spools: every reading exactly once."""
    broker = mosquitto_factory()
    env = fault_env(private_postgres, broker, tmp_path / "spool")
    env["PANTAU_INGEST__PROCESSES"] = "2"
    pantau = PantauProcess(env, tmp_path)
    pantau.start()
    pantau.wait_ready(60)
    children = [_child_pid(pantau, 0), _child_pid(pantau, 1)]
    stream = Stream(broker.port).start()
    stream.at(0.4)
    pantau.kill()
    for pid in children:
        wait_for(f"orphaned ingest process {pid} gone", lambda pid=pid: not _alive(pid), 20)
    pantau.start()
    try:
        stream.finish()
        pantau.wait_ready(60)
        assert_exactly_once(private_postgres)
    finally:
        assert pantau.stop() == 0
