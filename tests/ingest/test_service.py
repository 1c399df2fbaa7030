"""The ingest worker inside the service, against the real broker and database: policies,
shared subscriptions, MQTT 3.1.1, credentials over TLS, and its metrics."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pantau.embedded import MosquittoBroker, free_port
from pantau.settings import Settings
from tests.fixtures.mqtt import Publisher
from tests.fixtures.tls import make_server_cert
from tests.pantau.test_service import running, wait_ready


def with_changes(settings: Settings, **sections: dict[str, object]) -> Settings:
    update = {}
    for name, values in sections.items():
        section = getattr(settings, name)
        update[name] = type(section).model_validate({**section.model_dump(), **values})
    return settings.model_copy(update=update)


async def count(url: str, sql: str, want: int) -> int:
    """The query's count once it reaches `want`, or what it is after 20 s."""
    deadline = time.monotonic() + 20
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while True:
            row = await (await conn.execute(sql)).fetchone()
            value = int(row[0]) if row else 0
            if value >= want or time.monotonic() > deadline:
                return value
            await asyncio.sleep(0.1)


def samples(text: str) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


BASE_MS = int(time.time() * 1000)


def json_message(device: str, n: int) -> tuple[str, bytes]:
    """Reading n of a device, n ms before the test module started (unique per n)."""
    return f"bekasi-json/setu/{device}", orjson.dumps({"ts": BASE_MS - n, "readings": {"seq": n}})


async def publish(port: int, messages: list[tuple[str, bytes]], **kw: object) -> None:
    publisher = Publisher(port, **kw)  # type: ignore[arg-type]
    await asyncio.to_thread(publisher.wait, publisher.publish(messages))
    publisher.close()


async def test_metrics_after_ingesting(settings: Settings) -> None:
    async with running(settings) as url, httpx.AsyncClient(base_url=url) as http:
        await wait_ready(http)
        await publish(
            settings.mqtt.port,
            [json_message("aq-1", n) for n in range(300)] + [("bekasi/setu/x/y", b"??")],
        )
        assert await count(settings.database.url, "SELECT count(*) FROM readings", 300) == 300
        await asyncio.sleep(0.5)
        m = samples((await http.get("/metrics")).text)
    assert m["pantau_mqtt_messages_received_total"] == 301
    assert m["pantau_mqtt_messages_acknowledged_total"] == 301
    assert m["pantau_ingest_readings_written_total"] == 300
    assert m["pantau_ingest_messages_quarantined_total{reason=malformed_payload}"] == 1
    assert m["pantau_ingest_batch_readings_count"] >= 1
    assert m["pantau_ingest_write_seconds_count"] >= 1
    assert 100 <= m["pantau_ingest_lag_seconds_count"] <= 300  # sampled, 100 per batch at most
    assert m["pantau_ingest_pending_messages"] == 0
    assert m["pantau_ingest_database_connected"] == 1


async def test_unregistered_devices_quarantined_by_policy(settings: Settings) -> None:
    settings = with_changes(settings, ingest={"unregistered_devices": "quarantine"})
    async with running(settings) as url, httpx.AsyncClient(base_url=url) as http:
        await wait_ready(http)
        async with await psycopg.AsyncConnection.connect(
            settings.database.url, autocommit=True
        ) as c:
            await c.execute("INSERT INTO devices (device_id) VALUES ('wl-known'), ('wl-retired')")
            await c.execute("UPDATE devices SET status = 'retired' WHERE device_id = 'wl-retired'")
        await publish(
            settings.mqtt.port,
            [json_message(d, 1) for d in ("wl-known", "wl-stranger", "wl-retired")],
        )
        assert await count(settings.database.url, "SELECT count(*) FROM quarantine", 2) == 2
        async with await psycopg.AsyncConnection.connect(settings.database.url) as c:
            written = await (await c.execute("SELECT device_id FROM readings")).fetchall()
            held = await (
                await c.execute("SELECT reason, detail FROM quarantine ORDER BY detail")
            ).fetchall()
    assert written == [("wl-known",)]
    assert held == [
        ("unregistered_device", "not in the registry: wl-retired"),
        ("unregistered_device", "not in the registry: wl-stranger"),
    ]


async def test_accepted_strangers_are_listed_as_pending(settings: Settings) -> None:
    async with running(settings) as url, httpx.AsyncClient(base_url=url) as http:
        await wait_ready(http)
        await publish(settings.mqtt.port, [json_message("wl-new", 1)])
        assert (
            await count(
                settings.database.url,
                "SELECT count(*) FROM pending_devices WHERE device_id = 'wl-new'",
                1,
            )
            == 1
        )


async def test_shared_subscription_splits_the_load(
    settings: Settings, mosquitto_factory: Callable[[], MosquittoBroker], tmp_path: Path
) -> None:
    broker = mosquitto_factory()
    common = {"port": broker.port, "shared_group": "pantau"}
    first = with_changes(
        settings, mqtt={**common, "client_id": "pantau-a"}, ingest={"spool_dir": tmp_path / "a"}
    )
    second = with_changes(
        settings,
        mqtt={**common, "client_id": "pantau-b"},
        ingest={"spool_dir": tmp_path / "b"},
        http={"port": free_port()},
    )
    async with (
        running(first) as url_a,
        running(second) as url_b,
        httpx.AsyncClient(base_url=url_a) as a,
        httpx.AsyncClient(base_url=url_b) as b,
    ):
        await wait_ready(a)
        await wait_ready(b)
        await publish(broker.port, [json_message(f"d{n % 7}", n) for n in range(1000)])
        assert await count(settings.database.url, "SELECT count(*) FROM readings", 1000) == 1000
        got_a = samples((await a.get("/metrics")).text)["pantau_mqtt_messages_received_total"]
        got_b = samples((await b.get("/metrics")).text)["pantau_mqtt_messages_received_total"]
    assert got_a + got_b == 1000
    assert got_a > 100
    assert got_b > 100


async def test_mqtt_311(settings: Settings) -> None:
    settings = with_changes(settings, mqtt={"protocol": "3.1.1"})
    async with running(settings) as url, httpx.AsyncClient(base_url=url) as http:
        await wait_ready(http)
        await publish(settings.mqtt.port, [json_message("d1", n) for n in range(50)])
        assert await count(settings.database.url, "SELECT count(*) FROM readings", 50) == 50


@pytest.fixture
def tls_broker(
    tmp_path: Path, mosquitto_factory: Callable[[], MosquittoBroker]
) -> tuple[MosquittoBroker, Path]:
    """A broker that takes only TLS and a username/password (openssl makes a throwaway CA)."""
    import shutil
    import tempfile

    certs = make_server_cert(Path(tempfile.mkdtemp(prefix="pantau-tls-"))).ca.parent
    run = lambda *a: subprocess.run(a, check=True, capture_output=True, cwd=certs)  # noqa: E731
    run("mosquitto_passwd", "-b", "-c", "passwd", "pantau", "s3cret-pw")
    for f in certs.iterdir():
        f.chmod(0o644)
    port = free_port()
    import pantau.embedded as embedded

    base = Path(tempfile.mkdtemp(prefix="pantau-mqtt-"))
    base.chmod(0o755)
    broker = embedded.MosquittoBroker(
        base,
        port=free_port(),
        extra_config=[
            f"listener {port} 127.0.0.1",
            f"cafile {certs}/ca.crt",
            f"certfile {certs}/server.crt",
            f"keyfile {certs}/server.key",
            f"password_file {certs}/passwd",
        ],
    )
    broker.start()
    broker.tls_port = port  # type: ignore[attr-defined]
    yield broker, certs  # type: ignore[misc]
    broker.stop()
    shutil.rmtree(base, ignore_errors=True)
    shutil.rmtree(certs, ignore_errors=True)


async def test_tls_and_password(
    settings: Settings, tls_broker: tuple[MosquittoBroker, Path]
) -> None:
    broker, certs = tls_broker
    port = broker.tls_port  # type: ignore[attr-defined]
    mqtt = {
        "port": port,
        "tls": True,
        "tls_ca_file": certs / "ca.crt",
        "username": "pantau",
        "password": "s3cret-pw",
    }
    async with (
        running(with_changes(settings, mqtt=mqtt)) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        await wait_ready(http)
    wrong = with_changes(settings, mqtt={**mqtt, "password": "wrong", "reconnect_max_seconds": 0.5})
    async with running(wrong) as url, httpx.AsyncClient(base_url=url) as http:
        for _ in range(100):
            report = await wait_ready(http, want=503)
            if "refused" in report["checks"]["broker"]:
                break
            await asyncio.sleep(0.1)
    assert report["checks"]["broker"] == (
        f"broker 127.0.0.1:{port}: broker refused the connection: Not authorized"
    )
    assert "wrong" not in str(report)
