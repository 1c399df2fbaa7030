"""The image and the systemd unit keep Pantau's state where it survives them, checked statically:
no Docker engine runs here, and systemd is not PID 1 (so the unit is verified and scored by
`systemd-analyze`, not started). `pantau run` itself as the unprivileged user: test_instance.py."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from pantau.embedded import MosquittoBroker
from tests.fixtures.mqtt import Publisher
from tests.fixtures.pantau_proc import wait_for

DEPLOY = Path(__file__).parents[2] / "deploy"
STATE = "/var/lib/pantau"


def dockerfile() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_image_is_multi_stage_non_root_with_its_state_in_a_volume_it_owns() -> None:
    lines = dockerfile()
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) == 2, stages
    assert all("-slim" in stage for stage in stages)
    runtime = lines[lines.index(stages[1]) :]

    (user,) = [line.split()[1] for line in runtime if line.startswith("USER ")]
    uid = user.split(":")[0]
    assert uid.isdigit(), "a numeric user, so runAsNonRoot and a bind mount's chown can see it"
    assert int(uid) != 0
    (useradd,) = [line for line in runtime if "useradd" in line]
    assert f"--uid {uid}" in useradd

    made = next(i for i, line in enumerate(runtime) if "install -d -o pantau -g pantau" in line)
    assert STATE in runtime[made]
    volume = next(i for i, line in enumerate(runtime) if line.startswith("VOLUME "))
    assert STATE in runtime[volume]
    assert made < volume, "created and owned before VOLUME, so a new volume starts out owned"
    assert any(
        line.startswith("ENV ") and f"PANTAU_SERVICE__STATE_DIR={STATE}" in line for line in runtime
    )
    (health,) = [line for line in runtime if line.startswith("HEALTHCHECK ")]
    assert "/readyz" in health
    assert "COPY --from=build" in "\n".join(runtime)
    assert not any("pip install" in line for line in runtime), "installed in the build stage"


def unit() -> str:
    return (DEPLOY / "systemd" / "pantau.service").read_text()


def test_unit_keeps_its_state_in_the_state_directory_and_restarts_on_failure() -> None:
    settings = dict(
        line.split("=", 1) for line in unit().splitlines() if "=" in line and line[0] != "#"
    )
    assert settings["StateDirectory"] == "pantau"  # $STATE_DIRECTORY: service.state_dir
    assert settings["ProtectSystem"] == "strict"
    assert settings["Restart"] == "on-failure"
    assert settings["User"] == "pantau"
    assert not [v for v in settings.values() if "/tmp" in v], "PrivateTmp empties /tmp at stop"


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if not found:
        pytest.fail("needs systemd-analyze: apt-get install systemd")
    return found


def test_unit_verifies_and_is_hardened(tmp_path: Path) -> None:
    # /opt/pantau is not installed here: verify the unit with ExecStart on a program that is.
    copy = tmp_path / "pantau.service"
    copy.write_text(re.sub(r"(?m)^ExecStart=.*$", "ExecStart=/usr/bin/true", unit()))
    verify = subprocess.run(
        [systemd_analyze(), "verify", str(copy)], capture_output=True, text=True, check=False
    )
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr == "", verify.stderr

    security = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert security.returncode == 0, security.stderr
    match = re.search(r"Overall exposure level for pantau.service: ([\d.]+)", security.stdout)
    assert match, security.stdout
    assert float(match[1]) <= 2.0, security.stdout  # "OK" is below 3; it scores 1.3 today


class Member:
    """A member of a shared subscription with a persistent MQTT 5 session, as Pantau is."""

    def __init__(self, port: int, client_id: str) -> None:
        self.port = port
        self.client_id = client_id
        self.got: set[str] = set()
        self.client: mqtt.Client | None = None

    def connect(self) -> None:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5
        )
        client.on_message = lambda _c, _u, msg: self.got.add(msg.payload.decode())
        subscribed = threading.Event()
        client.on_subscribe = lambda *_args: subscribed.set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        client.connect("127.0.0.1", self.port, clean_start=False, properties=props)
        client.subscribe(f"$share/{GROUP}/{TOPIC}", qos=1)
        client.loop_start()
        assert subscribed.wait(10), "no SUBACK"
        self.client = client

    def disconnect(self) -> None:
        assert self.client is not None
        self.client.disconnect()
        self.client.loop_stop()
        self.client = None


GROUP = "pantau"
TOPIC = f"retire-{uuid.uuid4().hex[:6]}/reading"


def publish(publisher: Publisher, first: int, n: int) -> set[str]:
    payloads = [str(i) for i in range(first, first + n)]
    publisher.wait(publisher.publish((TOPIC, p) for p in payloads))
    return set(payloads)


def test_retiring_an_instance_as_the_guide_says_stops_its_share(mosquitto: MosquittoBroker) -> None:
    """Upstream eclipse/mosquitto issue 1747, and the procedure of docs/deploy.md against it."""
    retired_id = f"pantau-retired-{uuid.uuid4().hex[:6]}"
    retired = Member(mosquitto.port, retired_id)
    remaining = Member(mosquitto.port, f"pantau-remaining-{uuid.uuid4().hex[:6]}")
    retired.connect()
    retired.disconnect()  # gone, its session kept (as a stopped instance's is)
    remaining.connect()
    publisher = Publisher(mosquitto.port)
    try:
        sent = publish(publisher, 0, 20)
        wait_for("the remaining member's share", lambda: len(remaining.got) >= 5)
        # The rest was queued for the gone member: it gets them when it comes back.
        retired.connect()
        wait_for("every message delivered", lambda: remaining.got | retired.got == sent)
        assert retired.got, "issue 1747 no longer holds: the guide's note can go"
        retired.disconnect()

        # The guide's command, with this broker's address and the retired member's id.
        guide = (Path(__file__).parents[2] / "docs" / "deploy.md").read_text()
        assert "-i \"$id\" -x 0 -t 'pantau/retired' -E" in guide
        cmd = ["mosquitto_sub", "-V", "mqttv5", "-h", "127.0.0.1", "-p", str(mosquitto.port)]
        cmd += ["-i", retired_id, "-x", "0", "-t", "pantau/retired", "-E"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0, done.stderr

        remaining.got.clear()
        sent = publish(publisher, 100, 20)
        wait_for("every message to the remaining member", lambda: remaining.got == sent, 15)
    finally:
        publisher.close()
        remaining.disconnect()
