"""deploy/mosquitto/mosquitto.conf started as it is by the Debian `mosquitto` 2: only its
paths (certificates, plugin, data) and its port are rewritten for this machine. A throwaway CA
signs the broker's certificate; dynamic security holds Pantau's admin client."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from pantau.embedded import MESSAGE_SIZE_LIMIT, find_dynsec_plugin, free_port
from pantau.settings import IngestSettings
from tests.fixtures.tls import ServerCert, make_server_cert

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy/mosquitto/mosquitto.conf"
ADMIN = ("pantau", "admin-pw-for-tests")


def _setting(name: str) -> int:
    found = re.findall(rf"^{name} (\d+)$", CONFIG.read_text(), flags=re.MULTILINE)
    assert len(found) == 1, f"{name}: {found}"
    return int(found[0])


def test_queue_limits_hold_a_full_spool_and_one_largest_message() -> None:
    spool = IngestSettings.model_fields["spool_max_bytes"].default
    assert _setting("message_size_limit") == MESSAGE_SIZE_LIMIT  # as `make run`'s broker
    assert IngestSettings.model_fields["max_payload_bytes"].default < MESSAGE_SIZE_LIMIT
    assert _setting("max_queued_bytes") == spool + MESSAGE_SIZE_LIMIT
    assert _setting("max_queued_messages") == spool // 256


@dataclass
class Broker:
    port: int
    tls: ServerCert


@pytest.fixture
def deploy_broker() -> Iterator[Broker]:
    base = Path(tempfile.mkdtemp(prefix="pantau-deploy-mqtt-"))
    base.chmod(0o755)
    tls = make_server_cert(base / "certs")
    data = base / "data"
    data.mkdir()
    dynsec = data / "dynamic-security.json"
    # The compose service mosquitto-init's own script, its paths rewritten, run twice: the second
    # run must leave the first one's file alone.
    compose = yaml.safe_load((ROOT / "deploy/compose.yaml").read_text())
    script = compose["services"]["mosquitto-init"]["entrypoint"][2].replace("$$", "$")
    password = base / "mqtt_password"
    password.write_text(ADMIN[1])
    script = script.replace("/mosquitto/data/", f"{data}/").replace(
        "/run/secrets/mqtt_password", str(password)
    )
    if os.geteuid() != 0:  # only root may chown; the file is ours already
        script = script.replace("chown mosquitto:mosquitto", "true")
    runs = [subprocess.run(["sh", "-c", script], capture_output=True, text=True)]
    first = dynsec.read_bytes()
    runs.append(subprocess.run(["sh", "-c", script], capture_output=True, text=True))
    for done in runs:
        assert done.returncode == 0, done.stdout + done.stderr
    assert dynsec.read_bytes() == first
    runas = pwd.getpwnam("mosquitto") if os.geteuid() == 0 else None
    if runas is not None:  # as root Mosquitto drops to its own user, which must write data/
        os.chown(data, runas.pw_uid, runas.pw_gid)
        assert dynsec.stat().st_uid == runas.pw_uid
    port = free_port()
    text = CONFIG.read_text()
    for old, new in {
        "/usr/lib/mosquitto_dynamic_security.so": str(find_dynsec_plugin()),
        "/mosquitto/data/": f"{data}/",
        "/run/secrets/mqtt_cert": str(tls.cert),
        "/run/secrets/mqtt_key": str(tls.key),
        "listener 8883\n": f"listener {port} 127.0.0.1\n",
    }.items():
        assert old in text, f"{old!r} is no longer in {CONFIG}: update this test"
        text = text.replace(old, new)
    config = base / "mosquitto.conf"
    config.write_text(text)
    log = base / "mosquitto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["mosquitto", "-c", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, f"mosquitto exited: {log.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"not listening: {log.read_text()}"
                time.sleep(0.05)
        yield Broker(port, tls)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(base, ignore_errors=True)


def _publish(broker: Broker, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "mosquitto_pub",
            "-h",
            "localhost",
            "-p",
            str(broker.port),
            "-q",
            "1",
            "-t",
            "t/deploy",
            "-m",
            "42",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_deploy_broker_takes_tls_and_dynamic_security_clients_only(
    deploy_broker: Broker,
) -> None:
    ca = str(deploy_broker.tls.ca)
    admin = _publish(deploy_broker, "--cafile", ca, "-u", ADMIN[0], "-P", ADMIN[1])
    assert admin.returncode == 0, admin.stderr
    anonymous = _publish(deploy_broker, "--cafile", ca)
    assert anonymous.returncode != 0
    assert "not authorised" in anonymous.stderr.lower(), anonymous.stderr
    wrong = _publish(deploy_broker, "--cafile", ca, "-u", ADMIN[0], "-P", "wrong")
    assert wrong.returncode != 0
    # No clear-text MQTT on the listener: a plain client cannot even connect.
    plain = _publish(deploy_broker, "-u", ADMIN[0], "-P", ADMIN[1])
    assert plain.returncode != 0
