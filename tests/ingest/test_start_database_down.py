"""Pantau started while its database is down (a power cut at the command center, a database
server that boots slower): it comes up, subscribes, spools and acknowledges; when PostgreSQL
starts, it applies the migrations, starts the workers that need them and replays the spool.
Real `pantau run`, Mosquitto and PostgreSQL (issue 8.1)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from pantau.embedded import MosquittoBroker, PostgresCluster
from tests.fixtures.pantau_proc import PantauProcess, ingest_env
from tests.ingest.test_faults import MESSAGES, Stream, assert_exactly_once


def readyz(pantau: PantauProcess) -> dict[str, Any]:
    response = httpx.get(f"http://127.0.0.1:{pantau.port}/readyz", timeout=5)
    report: dict[str, Any] = response.json()
    report["code"] = response.status_code
    return report


def wait_for(what: str, pantau: PantauProcess, ok: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert pantau.proc is not None
        assert pantau.proc.poll() is None, pantau.log.read_text()[-3000:]
        try:
            if ok():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"not {what} within {timeout}s:\n{pantau.log.read_text()[-3000:]}")


def test_start_with_the_database_down_then_store_everything_exactly_once(
    private_postgres: PostgresCluster,
    mosquitto_factory: Callable[[], MosquittoBroker],
    tmp_path: Path,
) -> None:
    cluster = private_postgres
    cluster.stop("fast")  # down before Pantau starts: its database was never migrated either
    broker = mosquitto_factory()
    pantau = PantauProcess(
        ingest_env(
            cluster,
            broker,
            tmp_path / "spool",
            "cold",
            PANTAU_INGEST__DATABASE_RETRY_SECONDS="0.5",
            PANTAU_INGEST__BATCH_SIZE="2000",
        ),
        tmp_path,
    )
    pantau.start()
    try:
        seen: list[str] = []

        def down_and_subscribed() -> bool:
            report = readyz(pantau)
            seen.append(report["checks"]["database"])
            checks = dict(report["checks"])
            ingest = checks.pop("ingest", "")  # the ingestion writer's own view: why it spools
            return (
                report["code"] == 503
                and checks == {"database": "down (spooling)", "broker": "ok"}
                and ingest.startswith("database down (waiting for the database")
            )

        wait_for("up with the database down", pantau, down_and_subscribed, 30)
        assert pantau.metric("pantau_database_up") == 0
        assert pantau.metric("pantau_database_schema_ready") == 0

        stream = Stream(broker.port, rate=1000).start()
        stream.finish()  # the broker has all 20,000 readings
        # Spooled and acknowledged, as when the database drops while running.
        wait_for(
            "acknowledging every message",
            pantau,
            lambda: pantau.metric("pantau_mqtt_messages_acknowledged_total") >= MESSAGES,
            60,
        )
        assert pantau.metric("pantau_ingest_spool_bytes") > 0
        assert readyz(pantau)["checks"]["database"] == "down (spooling)"

        cluster.start()
        wait_for("ready", pantau, lambda: readyz(pantau)["code"] == 200, 60)
        assert_exactly_once(cluster)
        wait_for(
            "done replaying",
            pantau,
            lambda: pantau.metric("pantau_ingest_spool_bytes") == 0,
            30,
        )
        assert pantau.metric("pantau_database_up") == 1
        assert pantau.metric("pantau_database_schema_ready") == 1
        metrics = httpx.get(f"http://127.0.0.1:{pantau.port}/metrics", timeout=5).text
        # The workers that need the schema started once it was there, and nothing crash-looped.
        for worker in ("storage", "ingest-housekeeping", "database", "ingest", "http"):
            assert f'pantau_worker_up{{worker="{worker}"}} 1.0' in metrics, worker
        restarts = re.findall(
            r'^pantau_worker_restarts_total\{worker="([^"]+)"\} (\S+)$', metrics, re.M
        )
        assert restarts
        assert {w: float(n) for w, n in restarts if float(n)} == {}
        assert "Traceback" not in pantau.log.read_text()
    finally:
        pantau.stop()
    assert "down (spooling)" in seen
