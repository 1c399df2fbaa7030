"""Per-device MQTT credentials against a real Mosquitto with the dynamic security plugin: a
device publishes under its own topic, is refused elsewhere, and stops when retired."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from pantau.embedded import MosquittoBroker, free_port
from pantau.settings import Settings
from tests.devices.conftest import Api
from tests.fixtures.servers import DYNSEC_ADMIN
from tests.pantau.test_service import running

WL = {
    "device_id": "wl-setu-07",
    "name": "Pos pantau Kali Cikarang",
    "device_type": "water_level",
    "kecamatan": "setu",
    "latitude": -6.351,
    "longitude": 107.034,
}


class Device:
    """A device connecting with its issued credentials (MQTT 5, to read refusal reasons)."""

    def __init__(self, port: int, username: str, password: str) -> None:
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.refused: list[str] = []
        self.acks: dict[int, str] = {}
        self.acked = threading.Condition()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"dev-{uuid.uuid4().hex[:6]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.on_disconnect = lambda *a: self.disconnected.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_connect(self, c: Any, u: Any, f: Any, reason: Any, p: Any) -> None:
        if reason.is_failure:
            self.refused.append(str(reason))
        else:
            self.connected.set()

    def _on_publish(self, c: Any, u: Any, mid: int, reason: Any, p: Any) -> None:
        with self.acked:
            self.acks[mid] = str(reason)
            self.acked.notify_all()

    def publish(self, topic: str, payload: bytes) -> str:
        """The broker's PUBACK reason for a QoS 1 publish."""
        info = self.client.publish(topic, payload, qos=1)
        with self.acked:
            assert self.acked.wait_for(lambda: info.mid in self.acks, timeout=10)
            return self.acks[info.mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def reading(value: float) -> bytes:
    return orjson.dumps({"ts": int(time.time() * 1000), "readings": {"water_level_cm": value}})


async def test_issued_credentials_publish_only_under_their_own_topic(
    dynsec_api: Api, dynsec_broker: MosquittoBroker
) -> None:
    async with dynsec_api.client("technician") as http:
        registered = await http.post("/api/v1/devices", json=WL)
        assert registered.status_code == 201, registered.text
        creds = registered.json()["credentials"]
        assert creds["username"] == "wl-setu-07"
        assert creds["host"] == "mqtt.bekasikab.example"
        assert creds["topic"] == "bekasi-json/setu/wl-setu-07"
        assert len(creds["password"]) >= 20
        assert registered.json()["device"]["mqtt_username"] == "wl-setu-07"
        # The password is shown once: reading the device again does not carry it.
        assert creds["password"] not in (await http.get("/api/v1/devices/wl-setu-07")).text

        device = Device(dynsec_broker.port, creds["username"], creds["password"])
        assert device.connected.wait(10)
        assert device.publish(creds["topic"], reading(101.5)) == "Success"
        assert device.publish("bekasi-json/setu/wl-other-01", reading(999)) == "Not authorized"
        assert device.publish("bekasi/setu/wl-setu-07/water_level_cm", b"5") == "Not authorized"
        # Its status (and last-will) topic is its own too, whatever its readings' format.
        assert device.publish("bekasi/setu/wl-setu-07/status", b"online") == "Success"
        assert device.publish("bekasi/setu/wl-other-01/status", b"offline") == "Not authorized"
        device.close()
        for _ in range(100):
            latest = (await http.get("/api/v1/devices/wl-setu-07/readings/latest")).json()
            if latest:
                break
            await asyncio.sleep(0.1)
        assert [(r["metric"], r["value"]) for r in latest] == [("water_level_cm", 101.5)]
        async with await psycopg.AsyncConnection.connect(dynsec_api.db) as conn:
            other = await (
                await conn.execute("SELECT count(*) FROM readings WHERE device_id = 'wl-other-01'")
            ).fetchone()
        assert other == (0,)

        wrong = Device(dynsec_broker.port, creds["username"], "not-the-password")
        await asyncio.sleep(1)
        assert wrong.refused
        assert not wrong.connected.is_set()
        wrong.close()

        live = Device(dynsec_broker.port, creds["username"], creds["password"])
        assert live.connected.wait(10)
        retired = await http.post(
            "/api/v1/devices/wl-setu-07/retire", headers={"If-Match": registered.headers["etag"]}
        )
        assert retired.status_code == 200, retired.text
        assert await asyncio.to_thread(live.disconnected.wait, 10), "retiring disconnects it too"
        live.close()
        after = Device(dynsec_broker.port, creds["username"], creds["password"])
        await asyncio.sleep(1)
        assert after.refused, "a retired device's credentials must stop working"
        after.close()

        back = await http.patch(
            "/api/v1/devices/wl-setu-07",
            json={"status": "active"},
            headers={"If-Match": retired.headers["etag"]},
        )
        assert back.status_code == 200
        again = Device(dynsec_broker.port, creds["username"], creds["password"])
        assert again.connected.wait(10)
        again.close()


async def test_moving_a_device_moves_its_permission(
    dynsec_api: Api, dynsec_broker: MosquittoBroker
) -> None:
    async with dynsec_api.client("technician") as http:
        registered = await http.post("/api/v1/devices", json=WL)
        creds = registered.json()["credentials"]
        moved = await http.patch(
            "/api/v1/devices/wl-setu-07",
            json={"kecamatan": "babelan"},
            headers={"If-Match": registered.headers["etag"]},
        )
        assert moved.json()["topic"] == "bekasi-json/babelan/wl-setu-07"
    device = Device(dynsec_broker.port, creds["username"], creds["password"])
    assert device.connected.wait(10)
    assert device.publish("bekasi-json/babelan/wl-setu-07", reading(1)) == "Success"
    assert device.publish("bekasi-json/setu/wl-setu-07", reading(1)) == "Not authorized"
    assert device.publish("bekasi/babelan/wl-setu-07/status", b"online") == "Success"
    assert device.publish("bekasi/setu/wl-setu-07/status", b"online") == "Not authorized"
    device.close()


async def test_broker_without_the_plugin_registers_nothing(api: Api, settings: Settings) -> None:
    # `api` runs with a plain broker; point a second service at it with dynsec on.
    mqtt_settings = settings.mqtt.model_copy(
        update={"dynsec": True, "client_id": "pantau-nodynsec"}
    )
    http_settings = settings.http.model_copy(update={"port": free_port()})
    second = settings.model_copy(update={"mqtt": mqtt_settings, "http": http_settings})
    headers = {"Authorization": f"Bearer {api.tokens['technician']}"}
    async with (
        running(second) as url,
        httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http,
    ):
        refused = await http.post("/api/v1/devices", json=WL)
        assert refused.status_code == 503
        assert refused.json()["detail"] == (
            "nothing was changed: no answer from the dynamic security plugin: "
            "is it loaded in the broker?"
        )
        assert (await http.get("/api/v1/devices/wl-setu-07")).status_code == 404


async def test_renewed_credentials_replace_the_old_ones(
    dynsec_api: Api, dynsec_broker: MosquittoBroker
) -> None:
    async with dynsec_api.client("technician") as http:
        old = (await http.post("/api/v1/devices", json=WL)).json()["credentials"]
        renewed = await http.post("/api/v1/devices/wl-setu-07/credentials")
        assert renewed.status_code == 201
        new = renewed.json()["credentials"]
        assert new["password"] != old["password"]
        assert f"MQTT_PASSWORD={new['password']}" in renewed.json()["setup"]["snippet"]
        assert (await http.post("/api/v1/devices/nope/credentials")).status_code == 404
    refused = Device(dynsec_broker.port, old["username"], old["password"])
    await asyncio.sleep(1)
    assert refused.refused
    refused.close()
    works = Device(dynsec_broker.port, new["username"], new["password"])
    assert works.connected.wait(10)
    works.close()


def test_cli_issues_follows_and_renews(
    dynsec_broker: MosquittoBroker, migrated_db: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys

    env = {
        "PATH": os.environ["PATH"],
        "PANTAU_DATABASE__URL": migrated_db,
        "PANTAU_MQTT__HOST": "127.0.0.1",
        "PANTAU_MQTT__PORT": str(dynsec_broker.port),
        "PANTAU_MQTT__USERNAME": DYNSEC_ADMIN[0],
        "PANTAU_MQTT__PASSWORD": DYNSEC_ADMIN[1],
        "PANTAU_MQTT__DYNSEC": "true",
    }

    def pantau(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pantau", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
            check=False,
        )

    added = pantau(
        "devices",
        "add",
        "--id",
        "wl-cli-01",
        "--name",
        "Dari CLI",
        "--type",
        "water_level",
        "--kecamatan",
        "setu",
        "--qr",
    )
    assert added.returncode == 0, added.stderr
    password = next(
        line.split(": ", 1)[1]
        for line in added.stdout.splitlines()
        if line.startswith("MQTT password")
    )
    assert f"MQTT_PASSWORD={password}" in added.stdout
    assert "█" in added.stdout or "▀" in added.stdout  # the QR code, drawn in the terminal
    device = Device(dynsec_broker.port, "wl-cli-01", password)
    assert device.connected.wait(10)
    # Nobody subscribes in this test: MQTT 5 says so, and that is a success code.
    assert device.publish("bekasi-json/setu/wl-cli-01", reading(1)) in (
        "Success",
        "No matching subscribers",
    )
    device.close()

    assert pantau("devices", "retire", "wl-cli-01").returncode == 0
    retired = Device(dynsec_broker.port, "wl-cli-01", password)
    time.sleep(1)
    assert retired.refused
    retired.close()
    refused = pantau("devices", "credentials", "wl-cli-01")
    assert refused.returncode == 2
    assert "is retired: make it active first" in refused.stderr
    assert pantau("devices", "edit", "wl-cli-01", "--status", "active").returncode == 0
    renewed = pantau("devices", "credentials", "wl-cli-01")
    assert renewed.returncode == 0, renewed.stderr
    assert password not in renewed.stdout

    # The simulator with no right to publish is told so (exit 2), not "sent 40 messages".
    bad = dict(env, PANTAU_MQTT__USERNAME="wl-cli-01", PANTAU_MQTT__PASSWORD="wrong")
    refused_sim = subprocess.run(
        [sys.executable, "-m", "pantau", "simulate", "--duration", "1"],
        capture_output=True,
        text=True,
        env=bad,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert refused_sim.returncode == 2
    assert "refused the simulator: Not authorized" in refused_sim.stderr
