"""MQTT credentials per device.

With Mosquitto's dynamic security plugin (`mqtt.dynsec = true`), registering a device creates a
broker client: username = device id, a random password shown once (the broker keeps only a
hash), and a role that may publish only on the device's own topic. Retiring a device, or putting
it in maintenance, disables the client; making it active again enables it. Without the plugin,
no credentials are issued, and registration says so.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any, Protocol

import psycopg

from devices.dynsec import Dynsec
from devices.models import Credentials, Device
from pantau.mappings import default_mappings
from pantau.settings import MqttSettings

log = logging.getLogger(__name__)


class CredentialIssuer(Protocol):
    async def issue(
        self, conn: psycopg.AsyncConnection, device: Device, actor: str
    ) -> Credentials | None:
        """Create the device's broker client; return its one-time credentials."""

    async def follow(self, conn: psycopg.AsyncConnection, device: Device, actor: str) -> None:
        """Make the broker client match the device: enabled only when active, allowed to
        publish on its current topic."""


class NoCredentials:
    """No broker client management configured: devices publish with whatever the broker allows."""

    async def issue(
        self, conn: psycopg.AsyncConnection, device: Device, actor: str
    ) -> Credentials | None:
        return None

    async def follow(self, conn: psycopg.AsyncConnection, device: Device, actor: str) -> None:
        return None


def issuer_for(settings: MqttSettings) -> CredentialIssuer:
    return DynsecCredentials(settings) if settings.dynsec else NoCredentials()


async def renew(
    conn: psycopg.AsyncConnection, device: Device, issuer: CredentialIssuer, actor: str
) -> Credentials:
    """New credentials for a registered device; the old password stops working."""
    from devices.registry import Exists

    if device.status == "retired":
        raise Exists(f"device {device.device_id!r} is retired: make it active first")
    credentials = await issuer.issue(conn, device, actor)
    if credentials is None:
        raise Exists(
            "this Pantau manages no MQTT credentials: expected mqtt.dynsec = true with a broker "
            "running the dynamic security plugin"
        )
    return credentials


# Read off a phone screen and typed into a device's web form: no characters that look alike
# (l, I, 1, O, 0, o), in groups of four joined by "-" (the dashes are part of the password, so what
# is shown is exactly what is typed). 5 groups of 4 from 56 characters: about 116 random bits.
PASSWORD_ALPHABET = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # noqa: S105
PASSWORD_GROUPS, PASSWORD_GROUP_SIZE = 5, 4


def new_password() -> str:
    return "-".join(
        "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_GROUP_SIZE))
        for _ in range(PASSWORD_GROUPS)
    )


def role_name(device_id: str) -> str:
    return f"device:{device_id}"


# The default status mapping's topic (`bekasi/{kecamatan}/{device}/status`): where a device
# announces itself and leaves its last will, whatever the format of its readings.
_STATUS = next((m.topic for m in default_mappings() if m.format == "status"), None)


def acl_topics(device: Device) -> list[str]:
    """What the device may publish on: its readings' topic (bare-number devices: one metric per
    level below it, which covers their status topic too) and its status topic."""
    if device.payload_format == "number":
        return [f"{device.topic}/+"]
    topics = [device.topic]
    if _STATUS is not None:
        topics.append(_STATUS.format(kecamatan=device.kecamatan, device=device.device_id))
    return topics


class DynsecCredentials:
    def __init__(self, settings: MqttSettings) -> None:
        self._dynsec = Dynsec(settings)
        self._host = settings.device_host or settings.host
        self._port = settings.device_port or settings.port

    async def issue(
        self, conn: psycopg.AsyncConnection, device: Device, actor: str
    ) -> Credentials | None:
        password = new_password()
        role = role_name(device.device_id)
        # Leftovers of an earlier attempt that did not commit are replaced.
        await asyncio.to_thread(
            self._dynsec.execute,
            [
                {"command": "deleteClient", "username": device.device_id},
                {"command": "deleteRole", "rolename": role},
            ],
            ignore=("not found",),
        )
        await asyncio.to_thread(
            self._dynsec.execute,
            [
                {
                    "command": "createRole",
                    "rolename": role,
                    "textdescription": f"Pantau device {device.device_id}",
                },
                *(_acl("addRoleACL", role, topic) for topic in acl_topics(device)),
                {
                    "command": "createClient",
                    "username": device.device_id,
                    "password": password,
                    "roles": [{"rolename": role}],
                    "textname": device.name[:100],
                },
            ],
        )
        await conn.execute(
            "UPDATE devices SET mqtt_username = %s WHERE device_id = %s",
            (device.device_id, device.device_id),
        )
        await conn.execute(
            "INSERT INTO audit_log (actor, action, entity, entity_id) "
            "VALUES (%s, 'issue credentials', 'device', %s)",
            (actor, device.device_id),
        )
        if device.status != "active":
            await self.follow(conn, device, actor)
        return Credentials(
            host=self._host,
            port=self._port,
            username=device.device_id,
            password=password,
            topic=device.topic,
            payload_format=device.payload_format,
        )

    async def follow(self, conn: psycopg.AsyncConnection, device: Device, actor: str) -> None:
        if not device.mqtt_username:
            return
        role = role_name(device.device_id)
        answers = await asyncio.to_thread(
            self._dynsec.execute, [{"command": "getRole", "rolename": role}]
        )
        current = [
            a["topic"]
            for a in (answers[0].get("data", {}).get("role", {}).get("acls", []) if answers else [])
            if a.get("acltype") == "publishClientSend"
        ]
        wanted = acl_topics(device)
        commands: list[dict[str, Any]] = [
            {
                "command": "removeRoleACL",
                "rolename": role,
                "acltype": "publishClientSend",
                "topic": t,
            }
            for t in current
            if t not in wanted
        ]
        commands += [_acl("addRoleACL", role, t) for t in wanted if t not in current]
        enabled = device.status == "active"
        commands.append(
            {
                "command": "enableClient" if enabled else "disableClient",
                "username": device.mqtt_username,
            }
        )
        await asyncio.to_thread(self._dynsec.execute, commands)
        log.info("MQTT client of %s %s", device.device_id, "enabled" if enabled else "disabled")


def _acl(command: str, role: str, topic: str) -> dict[str, Any]:
    return {
        "command": command,
        "rolename": role,
        "acltype": "publishClientSend",
        "topic": topic,
        "priority": 0,
        "allow": True,
    }
