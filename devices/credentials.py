"""MQTT credentials per device. Without a broker that manages clients (Mosquitto's dynamic
security plugin), registering a device issues none, and says so."""

from __future__ import annotations

from typing import Protocol

import psycopg

from devices.models import Credentials, Device


class CredentialIssuer(Protocol):
    async def issue(
        self, conn: psycopg.AsyncConnection, device: Device, actor: str
    ) -> Credentials | None:
        """Create the device's broker client; return its one-time credentials."""

    async def follow_status(
        self, conn: psycopg.AsyncConnection, device: Device, actor: str
    ) -> None:
        """Enable the client of an active device; disable it otherwise."""


class NoCredentials:
    """No broker client management configured: devices publish with whatever the broker allows."""

    async def issue(
        self, conn: psycopg.AsyncConnection, device: Device, actor: str
    ) -> Credentials | None:
        return None

    async def follow_status(
        self, conn: psycopg.AsyncConnection, device: Device, actor: str
    ) -> None:
        return None
