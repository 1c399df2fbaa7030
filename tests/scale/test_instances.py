"""Scale-out on this machine: three identical `pantau run` on one Mosquitto and one PostgreSQL.

The sensors' readings are split by the broker (a shared subscription, `mqtt.shared_group`), the
cameras by leases in PostgreSQL (streams/leases.py), the outage detector runs on one instance at
a time (an advisory lock) and Alertmanager (a real one) is told once. One steady numbered stream
of readings runs through the whole test while:

1. one instance is killed with SIGKILL: its cameras are held and probed by the other two within
   two lease periods (`streams.lease_seconds` is 3 s here); it is then started again with the
   same client id and state (as systemd's Restart= or compose's restart policy would), so the
   broker hands it the messages it queued for its session while it was away;
2. all three are restarted one after the other (SIGTERM, then started again): a stopping instance
   releases its leases and the others take its cameras at their next refresh.

Then every numbered reading is in `readings` exactly once, every camera is probed, and a camera
that never answers has one outage and one alert, however many instances judged and delivered.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest

import streams
from devices import registry
from devices.models import DeviceIn
from pantau import migrate
from pantau.embedded import MosquittoBroker, PostgresCluster
from tests.devices.test_delivery import Alertmanager, alertmanager, notified  # noqa: F401
from tests.fixtures.mqtt import Publisher
from tests.fixtures.pantau_proc import PantauProcess, ingest_env, wait_for
from tests.fixtures.rtsp import RtspServer

LEASE = 3.0  # streams.lease_seconds: renewed every 1 s
MESSAGES = 3_000  # of 10 readings: 30,000 numbered readings
PER_MESSAGE = 10
RATE = 60.0  # messages per second: 50 s of stream
SENSORS = 20
CAMERAS = [f"cam-{i}" for i in range(5)]
DEAD = "cam-dead"  # nothing listens at its URL: one outage, one alert


def _numbered(n: int, base_ms: int) -> tuple[str, bytes]:
    readings = {f"r{j}": n * PER_MESSAGE + j for j in range(PER_MESSAGE)}
    doc = {"ts": base_ms + n, "readings": readings}
    return f"bekasi-json/setu/scale-{n % SENSORS:02d}", orjson.dumps(doc)


class Stream:
    """Publishes the numbered messages at a steady pace in a thread (QoS 1)."""

    def __init__(self, broker_port: int) -> None:
        self.publisher = Publisher(broker_port)
        self.sent = 0
        self._base_ms = int(time.time() * 1000) - 120_000
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._infos: list[mqtt.MQTTMessageInfo] = []

    def start(self) -> Stream:
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        for n in range(MESSAGES):
            topic, payload = _numbered(n, self._base_ms)
            self._infos.append(self.publisher.client.publish(topic, payload, qos=1))
            self.sent += 1
            delay = started + self.sent / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def at(self, fraction: float) -> None:
        while self.sent < MESSAGES * fraction:
            time.sleep(0.05)

    def finish(self) -> None:
        self._thread.join(120)
        self.publisher.wait(self._infos)
        self.publisher.close()


def _register(dsn: str, rtsp: RtspServer) -> None:
    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await migrate.migrate(conn, "plain")
            cameras = {c: ("setu", rtsp.url("moving")) for c in CAMERAS}
            cameras[DEAD] = ("cibitung", "rtsp://127.0.0.1:9/mati")  # alone in its kecamatan
            for device_id, (kecamatan, url) in cameras.items():
                data: dict[str, Any] = {
                    "device_id": device_id,
                    "name": device_id,
                    "device_type": "camera",
                    "kecamatan": kecamatan,
                    "expected_interval_seconds": 10,
                }
                await registry.create_device(conn, DeviceIn.model_validate(data), "test")
                await conn.execute(
                    "INSERT INTO cameras (device_id, rtsp_url, probe_interval_seconds)"
                    " VALUES (%s, %s, 1)",
                    (device_id, url),
                )

    asyncio.run(run())


def _query(dsn: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, connect_timeout=2) as conn:
        return conn.execute(sql, args or None).fetchall()


def _holders(dsn: str) -> dict[str, str | None]:
    """Camera -> the instance holding its lease now (None: free or expired)."""
    rows = _query(
        dsn,
        "SELECT device_id, CASE WHEN expires_at > now() THEN holder END FROM camera_leases",
    )
    return dict(rows)  # type: ignore[arg-type]


def _probed_since(dsn: str, since: float) -> set[str]:
    """Cameras with a check interval written that ended after `since` (Unix time)."""
    rows = _query(
        dsn,
        "SELECT DISTINCT device_id FROM camera_health WHERE time > to_timestamp(%s)",
        since,
    )
    return {r[0] for r in rows}


class Instance(PantauProcess):
    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        super().__init__(env, workdir)
        self.client_id = env["PANTAU_MQTT__CLIENT_ID"]

    def probes(self) -> float:
        return self.metric("pantau_camera_probes")


@pytest.fixture
def instances(
    private_postgres: PostgresCluster,
    mosquitto_factory: Callable[[], MosquittoBroker],
    rtsp_server: RtspServer,
    alertmanager: Alertmanager,  # noqa: F811
    tmp_path: Path,
) -> Iterator[tuple[list[Instance], MosquittoBroker]]:
    broker = mosquitto_factory()
    _register(private_postgres.dsn(), rtsp_server)
    procs = []
    for n in range(1, 4):
        workdir = tmp_path / f"pantau-{n}"
        workdir.mkdir()
        env = ingest_env(
            private_postgres,
            broker,
            workdir / "spool",
            f"scale{n}",
            # The tree these tests run from (a worktree's, not the editable install's).
            PYTHONPATH=str(Path(streams.__file__).resolve().parent.parent),
            PANTAU_MQTT__SHARED_GROUP="pantau",
            PANTAU_MQTT__RECONNECT_MAX_SECONDS="1",
            PANTAU_INGEST__DATABASE_RETRY_SECONDS="0.5",
            PANTAU_INGEST__DATABASE_RETRY_MAX_SECONDS="1",
            PANTAU_SERVICE__SHUTDOWN_TIMEOUT_SECONDS="5",
            PANTAU_STREAMS__LEASE_SECONDS=str(LEASE),
            PANTAU_STREAMS__SNAPSHOT_DIR=str(workdir / "snapshots"),
            PANTAU_STREAMS__STAGGER_SECONDS="0.2",
            PANTAU_STREAMS__OPEN_TIMEOUT_SECONDS="3",
            PANTAU_STREAMS__RECONNECT_MIN_SECONDS="0.3",
            PANTAU_STREAMS__RECONNECT_MAX_SECONDS="1",
            PANTAU_OUTAGES__DETECTOR_INTERVAL_SECONDS="1",
            # A camera unprobed for a moment (its instance killed) is not an outage here; one
            # that reports itself offline is, at once.
            PANTAU_OUTAGES__DOWN_FACTOR="30",
            PANTAU_OUTAGES__ALERTMANAGER_URLS=json.dumps([alertmanager.url]),
            PANTAU_OUTAGES__ALERTMANAGER_RESEND_SECONDS="5",
        )
        procs.append(Instance(env, workdir))
    try:
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.wait_ready(60)
        yield procs, broker
    finally:
        for proc in procs:
            proc.stop()


def test_kill_9_and_a_rolling_restart_lose_nothing(
    instances: tuple[list[Instance], MosquittoBroker],
    private_postgres: PostgresCluster,
    alertmanager: Alertmanager,  # noqa: F811
) -> None:
    procs, broker = instances
    dsn = private_postgres.dsn()
    everyone = {p.client_id for p in procs}
    cameras = {*CAMERAS, DEAD}

    def shared_fairly() -> object:
        holders = _holders(dsn)
        counts = sorted(list(holders.values()).count(p.client_id) for p in procs)
        return (set(holders) == cameras and counts == [2, 2, 2]) or holders

    wait_for("the six cameras split 2-2-2", shared_fairly, timeout=30)
    stream = Stream(broker.port).start()
    stream.at(0.15)

    # 1. kill -9 of the instance that holds cam-0.
    victim = next(p for p in procs if _holders(dsn)["cam-0"] == p.client_id)
    lost = {c for c, h in _holders(dsn).items() if h == victim.client_id}
    victim.kill()
    killed_at = time.time()
    started = time.monotonic()
    survivors = [p for p in procs if p is not victim]
    alive = {p.client_id for p in survivors}

    def taken_over() -> object:
        holders = _holders(dsn)
        probes = sum(p.probes() for p in survivors)
        return (all(holders.get(c) in alive for c in cameras) and probes == 6) or (
            holders,
            probes,
        )

    wait_for("the killed instance's cameras leased and probed by the others", taken_over, 15)
    took = time.monotonic() - started
    assert took < 2 * LEASE, f"takeover took {took:.1f}s, more than two lease periods"
    wait_for(
        "its cameras checked again by the others",
        lambda: lost <= _probed_since(dsn, killed_at + 0.5) or lost - _probed_since(dsn, killed_at),
        timeout=2 * LEASE + 5,
    )
    victim.start()  # same client id and spool: its session's queued messages come to it
    victim.wait_ready(60)

    # 2. A rolling restart of all three under the stream.
    for proc in procs:
        assert stream.sent < MESSAGES, "the stream ended before the rolling restart did"
        assert proc.stop() == 0, proc.log.read_text()[-3000:]
        proc.start()
        proc.wait_ready(60)
    stream.finish()

    def exactly_once() -> object:
        [row] = _query(
            dsn,
            "SELECT count(*), count(DISTINCT value), min(value), max(value)"
            " FROM readings WHERE device_id LIKE 'scale-%'",
        )
        total = MESSAGES * PER_MESSAGE
        return row == (total, total, 0.0, total - 1.0) or row

    wait_for("every numbered reading exactly once", exactly_once, timeout=60)
    assert exactly_once() is True  # nothing more came after (no late duplicate)

    restarted_at = time.time()
    wait_for("every camera shared again 2-2-2", shared_fairly, timeout=30)
    wait_for(
        "every camera checked after the restarts",
        lambda: _probed_since(dsn, restarted_at) >= cameras or _probed_since(dsn, restarted_at),
        timeout=20,
    )

    # One outage and one alert for the camera that never answered.
    def one_alert() -> object:
        firing = [
            a
            for n in alertmanager.notifications()
            for a in n["alerts"]
            if a["status"] == "firing" and a["labels"].get("device") == DEAD
        ]
        return len(firing) == 1 or len(firing)

    wait_for("Alertmanager notified once of cam-dead", one_alert, timeout=30)
    outages = _query(dsn, "SELECT device_id, cause FROM outages ORDER BY id")
    assert [o for o in outages if o[0] == DEAD] == [(DEAD, "offline:refused")]
    assert [o for o in outages if o[0] != DEAD] == []
    events = _query(
        dsn,
        "SELECT o.device_id, a.event FROM alert_outbox a JOIN outages o ON o.id = a.outage_id",
    )
    assert events == [(DEAD, "raised")]
    leaders = [p.metric("pantau_outage_detector_leader") for p in procs]
    assert sorted(leaders) == [0, 0, 1]
    active = httpx.get(f"{alertmanager.url}/api/v2/alerts", timeout=5).json()
    assert [a["labels"].get("device") for a in active] == [DEAD]
    assert everyone == {p.client_id for p in procs}
