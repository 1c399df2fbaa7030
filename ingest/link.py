"""The broker link: keeps an MQTT connection up and reports its state to /readyz and /metrics.

This is the foundation's view of the broker; the ingestion subscriber replaces it."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import aiomqtt
from prometheus_client import CollectorRegistry, Gauge

from pantau.errors import PantauError
from pantau.settings import MqttSettings
from pantau.supervisor import Worker

log = logging.getLogger(__name__)


class BrokerUnavailable(PantauError):
    """The MQTT broker cannot be reached or refused the connection."""


class BrokerLink:
    def __init__(self, settings: MqttSettings, registry: CollectorRegistry) -> None:
        self._settings = settings
        self._connected = False
        self._reason = "not connected yet"
        self._gauge = Gauge(
            "pantau_mqtt_connected", "1 while connected to the MQTT broker", registry=registry
        )

    @property
    def where(self) -> str:
        return f"{self._settings.host}:{self._settings.port}"

    async def check(self) -> str | None:
        return None if self._connected else f"broker {self.where}: {self._reason}"

    def worker(self) -> Worker:
        return Worker("mqtt-link", self.run)

    async def run(self, stop: asyncio.Event) -> None:
        s = self._settings
        password = s.password.get_secret_value() if s.password else None
        client = aiomqtt.Client(
            s.host,
            s.port,
            username=s.username,
            password=password,
            identifier=f"{s.client_id}-link-{socket.gethostname()}-{os.getpid()}",
            keepalive=s.keepalive_seconds,
            timeout=10,
        )
        try:
            async with client:
                self._set(True, "connected")
                log.info("connected to MQTT broker %s", self.where)
                async with asyncio.TaskGroup() as group:
                    # With no subscriptions, the message iterator only ends by raising when the
                    # connection drops.
                    lost = group.create_task(_until_disconnected(client))
                    stopping = group.create_task(stop.wait())
                    await asyncio.wait({lost, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    lost.cancel()
                    stopping.cancel()
        except aiomqtt.MqttError as exc:
            self._set(False, str(exc))
            raise BrokerUnavailable(f"MQTT broker {self.where}: {exc}") from exc
        finally:
            self._set(False, "disconnected" if stop.is_set() else self._reason)

    def _set(self, connected: bool, reason: str) -> None:
        self._connected = connected
        self._reason = reason
        self._gauge.set(1 if connected else 0)


async def _until_disconnected(client: aiomqtt.Client) -> None:
    async for _ in client.messages:
        pass
