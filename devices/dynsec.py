"""A client for Mosquitto's dynamic security plugin: JSON commands published to
`$CONTROL/dynamic-security/v1`, answers read from its `/response` topic. Pantau's own MQTT user
must have the plugin's admin role (`mosquitto_ctrl dynsec init` makes one)."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from pantau.errors import PantauError
from pantau.mqtt import apply_credentials
from pantau.settings import MqttSettings

CONTROL = "$CONTROL/dynamic-security/v1"


class DynsecError(PantauError):
    """The broker refused a command, or could not be asked."""

    exit_code = 2


class Dynsec:
    def __init__(self, settings: MqttSettings, timeout: float = 5.0) -> None:
        self._settings = settings
        self._timeout = timeout

    def execute(
        self, commands: list[dict[str, Any]], *, ignore: tuple[str, ...] = ()
    ) -> list[dict[str, Any]]:
        """Run the commands in order; raise DynsecError on the first failure whose error text
        does not contain one of `ignore` (e.g. "not found" when deleting what may not exist)."""
        s = self._settings
        answered = threading.Event()
        ready = threading.Event()
        responses: list[dict[str, Any]] = []
        failure: list[str] = []
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{s.client_id}-dynsec-{uuid.uuid4().hex[:6]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        apply_credentials(client, s)

        def on_connect(c: mqtt.Client, u: object, f: object, reason: Any, p: object) -> None:
            if reason.is_failure:
                failure.append(f"broker refused Pantau's admin connection: {reason}")
                answered.set()
                return
            c.subscribe(CONTROL + "/response", qos=1)

        def on_subscribe(c: mqtt.Client, u: object, mid: int, reasons: Any, p: object) -> None:
            if any(r.is_failure for r in reasons):
                failure.append("Pantau's MQTT user may not use dynamic security (no admin role)")
                answered.set()
            else:
                ready.set()

        def on_message(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
            responses.extend(orjson.loads(msg.payload).get("responses", []))
            answered.set()

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        try:
            client.connect(s.host, s.port, keepalive=30)
        except OSError as exc:
            raise DynsecError(f"cannot reach the MQTT broker {s.host}:{s.port}: {exc}") from None
        client.loop_start()
        try:
            if not (ready.wait(self._timeout) or answered.is_set()):
                raise DynsecError(f"the MQTT broker {s.host}:{s.port} did not answer in time")
            if failure:
                raise DynsecError(failure[0])
            client.publish(CONTROL, orjson.dumps({"commands": commands}), qos=1)
            if not answered.wait(self._timeout):
                raise DynsecError(
                    "no answer from the dynamic security plugin: is it loaded in the broker?"
                )
        finally:
            client.disconnect()
            client.loop_stop()
        for response in responses:
            error = response.get("error")
            if error and not any(text in error for text in ignore):
                raise DynsecError(f"broker refused {response.get('command')}: {error}")
        return responses
