"""The service against a real PostgreSQL and real Mosquitto, in-process and as `pantau run`."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import psycopg
import pytest

from pantau import service
from pantau.embedded import MosquittoBroker, free_port
from pantau.settings import Settings


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[str]:
    stop = asyncio.Event()
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        service.run(settings, stop=stop, on_started=lambda s: started.set_result(s.http_url))
    )
    done, _ = await asyncio.wait({task, started}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises the start-up error
    try:
        yield started.result()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def wait_ready(http: httpx.AsyncClient, want: int = 200) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + 15
    while True:
        response = await http.get("/readyz")
        if response.status_code == want or time.monotonic() > deadline:
            assert response.status_code == want, response.json()
            return response.json()  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)


async def test_service_ready_then_broker_outage_is_reported(
    settings: Settings, mosquitto_factory: Callable[[], MosquittoBroker]
) -> None:
    broker = mosquitto_factory()
    settings = settings.model_copy(
        update={"mqtt": settings.mqtt.model_copy(update={"port": broker.port})}
    )
    async with running(settings) as url, httpx.AsyncClient(base_url=url) as http:
        report = await wait_ready(http)
        assert report["checks"] == {"database": "ok", "broker": "ok", "ingest": "ok"}
        metrics = (await http.get("/metrics")).text
        assert "pantau_mqtt_connected 1.0" in metrics
        assert "pantau_database_up 1.0" in metrics

        broker.kill()
        report = await wait_ready(http, want=503)
        assert report["checks"]["broker"].startswith(f"broker 127.0.0.1:{broker.port}")
        assert report["checks"]["database"] == "ok"

        broker.start()  # the link reconnects with backoff
        await wait_ready(http)
        metrics = (await http.get("/metrics")).text
        assert "pantau_mqtt_connected 1.0" in metrics
        assert "pantau_mqtt_reconnects_total 0.0" not in metrics


async def test_pending_migrations_make_it_not_ready(settings: Settings) -> None:
    settings = settings.model_copy(
        update={"database": settings.database.model_copy(update={"migrate_on_start": False})}
    )
    async with running(settings) as url, httpx.AsyncClient(base_url=url) as http:
        report = await wait_ready(http, want=503)
    assert report["checks"]["database"].startswith("migrations pending: 0001_readings")


async def test_storage_worker_creates_todays_partition(settings: Settings) -> None:
    async with running(settings) as url, httpx.AsyncClient(base_url=url) as http:
        await wait_ready(http)
        async with await psycopg.AsyncConnection.connect(settings.database.url) as conn:
            for _ in range(100):
                cur = await conn.execute(
                    "SELECT to_regclass(pantau_partition_name("
                    " 'readings', (now() AT TIME ZONE 'UTC')::date))"
                )
                if (await cur.fetchone()) != (None,):
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("today's readings partition was never created")


# --- the `pantau` command as a user runs it -----------------------------------------------------


def pantau(*args: str, env: dict[str, str], **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pantau", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": os.environ["PATH"], "PANTAU_LOG__FORMAT": "text", **env},
        **kw,  # type: ignore[arg-type]
    )


def env_for(settings: Settings) -> dict[str, str]:
    return {
        "PANTAU_DATABASE__URL": settings.database.url,
        "PANTAU_MQTT__PORT": str(settings.mqtt.port),
        "PANTAU_HTTP__PORT": str(settings.http.port),
    }


def test_unreachable_database_at_start_runs_and_says_so(tmp_path: Path) -> None:
    db_port = free_port()
    http_port = free_port()
    env = {
        "PANTAU_DATABASE__URL": f"postgresql://pantau@127.0.0.1:{db_port}/pantau",
        "PANTAU_HTTP__PORT": str(http_port),
        "PANTAU_MQTT__PORT": str(free_port()),
        "PANTAU_INGEST__SPOOL_DIR": str(tmp_path / "spool"),
    }
    proc = pantau("run", env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        report = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            try:
                report = httpx.get(f"http://127.0.0.1:{http_port}/readyz").json()
                if report["checks"]["database"] == "down (spooling)":
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        assert report is not None
        assert report["checks"]["database"] == "down (spooling)", report
        assert report["status"] == "not ready"
        metrics = httpx.get(f"http://127.0.0.1:{http_port}/metrics").text
        assert "pantau_database_up 0.0" in metrics
        assert "pantau_database_schema_ready 0.0" in metrics
        assert 'pantau_worker_up{worker="http"} 1.0' in metrics
        # An API call that needs the database answers 503 in the API's shape, not 500.
        answer = httpx.get(
            f"http://127.0.0.1:{http_port}/api/v1/devices",
            headers={"Authorization": "Bearer pt_x"},
            timeout=15,  # the pool waits database.connect_timeout_seconds (5) for a connection
        )
        assert answer.status_code == 503, answer.text
        assert "database is unavailable" in answer.json()["detail"]
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert (
        # Every URL's userinfo is masked in logs (pantau/logs.py), a user name alone too.
        f"database down (cannot connect to the database postgresql://***@127.0.0.1:{db_port}" in err
    )
    assert "Traceback" not in err


def test_db_migrate_twice_and_status(settings: Settings, tmp_path: Path) -> None:
    env = env_for(settings)
    first = pantau("db", "migrate", env=env, cwd=tmp_path)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert "storage flavor: plain" in out
    assert "applied: 0001_readings" in out
    second = pantau("db", "migrate", env=env, cwd=tmp_path)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert "nothing to apply: schema is current" in out
    status = pantau("db", "status", env=env, cwd=tmp_path)
    out, err = status.communicate(timeout=60)
    assert status.returncode == 0, err
    assert out.splitlines()[0].split() == ["version", "name", "flavor", "applied"]
    assert "0001" in out
    assert "readings" in out
    assert "WIB" in out
    assert out.rstrip().endswith("schema is current")


def test_sigterm_drains_and_exits_0(settings: Settings, tmp_path: Path) -> None:
    proc = pantau("run", env=env_for(settings), cwd=tmp_path)
    url = f"http://127.0.0.1:{settings.http.port}/readyz"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    else:
        pytest.fail("pantau run never became ready")
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "SIGTERM received: draining" in err
    assert "all workers stopped" in err
