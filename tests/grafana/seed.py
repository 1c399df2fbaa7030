"""Registering devices and setting their detector state, for the wall's tests."""

from __future__ import annotations

import psycopg

from devices import registry
from devices.models import DeviceIn


async def add_device(conn: psycopg.AsyncConnection, device_id: str, kind: str, kec: str) -> None:
    await registry.create_device(
        conn,
        DeviceIn.model_validate(
            {"device_id": device_id, "name": device_id, "device_type": kind, "kecamatan": kec}
        ),
        "test",
    )


async def set_state(conn: psycopg.AsyncConnection, device_id: str, state: str) -> None:
    """The detector's conclusion, as device_liveness holds it (a down device is `silent`)."""
    await conn.execute(
        "INSERT INTO device_liveness (device_id, state, cause) VALUES (%s, %s, %s)"
        " ON CONFLICT (device_id) DO UPDATE SET state = EXCLUDED.state, cause = EXCLUDED.cause",
        (device_id, state, "silent" if state == "down" else None),
    )
