"""Camera leases: several identical instances on one database split the cameras between them.

Each instance (its holder id: `mqtt.client_id`, unique and stable per instance) calls `refresh`
every `streams.lease_seconds / 3`, in one transaction:

- it says it is alive (`camera_lease_holders`, expiring after `lease_seconds`);
- it renews the leases it holds on cameras still to be probed, and releases the others;
- its fair share is ceil(cameras to probe / live instances), at most `streams.max_cameras`:
  past it, it releases the excess (highest device ids first) for the others to claim; below it,
  it claims free or expired leases with `FOR UPDATE SKIP LOCKED` (instances claiming at once
  skip each other's rows instead of waiting or taking the same camera).

An instance killed stops renewing: its leases and its holder row expire together, the live count
drops, the others' share grows and they claim its cameras at their next refresh: within
`lease_seconds` plus one refresh. An instance stopping cleanly releases its leases (`release`).
Every time is the database's `now()`: one clock for every instance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import psycopg

_ALIVE = """
INSERT INTO camera_lease_holders (holder, heartbeat, expires_at)
VALUES (%(holder)s, now(), now() + make_interval(secs => %(lease)s))
ON CONFLICT (holder) DO UPDATE SET heartbeat = now(), expires_at = EXCLUDED.expires_at
"""
_FORGET = "DELETE FROM camera_lease_holders WHERE expires_at < now() - interval '1 day'"
_COUNTS = """
SELECT (SELECT count(*) FROM camera_lease_holders WHERE expires_at > now()),
       (SELECT count(*) FROM cameras_to_probe e)
"""
_RENEW = """
UPDATE camera_leases
SET expires_at = now() + make_interval(secs => %(lease)s), heartbeat = now()
WHERE holder = %(holder)s AND device_id IN (SELECT device_id FROM cameras_to_probe)
RETURNING device_id
"""
_RELEASE_GONE = """
UPDATE camera_leases SET holder = NULL, expires_at = '-infinity', heartbeat = NULL
WHERE holder = %(holder)s AND device_id NOT IN (SELECT device_id FROM cameras_to_probe)
"""
_RELEASE_SOME = """
UPDATE camera_leases SET holder = NULL, expires_at = '-infinity', heartbeat = NULL
WHERE holder = %(holder)s AND device_id = ANY(%(ids)s)
"""
_ROWS = """
INSERT INTO camera_leases (device_id)
SELECT e.device_id FROM cameras_to_probe e
WHERE NOT EXISTS (SELECT 1 FROM camera_leases l WHERE l.device_id = e.device_id)
ON CONFLICT (device_id) DO NOTHING
"""
_CLAIM = """
UPDATE camera_leases l
SET holder = %(holder)s, heartbeat = now(),
    expires_at = now() + make_interval(secs => %(lease)s)
WHERE l.device_id IN (
    SELECT f.device_id FROM camera_leases f
    WHERE (f.holder IS NULL OR f.expires_at <= now())
      AND f.device_id IN (SELECT device_id FROM cameras_to_probe)
    ORDER BY f.device_id
    LIMIT %(want)s
    FOR UPDATE SKIP LOCKED
)
RETURNING l.device_id
"""
_RELEASE_ALL = """
UPDATE camera_leases SET holder = NULL, expires_at = '-infinity', heartbeat = NULL
WHERE holder = %(holder)s
"""
_GONE = "DELETE FROM camera_lease_holders WHERE holder = %(holder)s"


@dataclass(frozen=True)
class Share:
    """What one refresh left this instance holding."""

    held: list[str]  # device ids leased to this instance, sorted
    instances: int  # live instances, this one included
    cameras: int  # cameras to probe, across all instances
    unprobed: int  # of this instance's fair share, the cameras past streams.max_cameras


async def refresh(
    conn: psycopg.AsyncConnection, holder: str, lease_seconds: float, max_cameras: int
) -> Share:
    """Say this instance is alive, renew its leases and move them towards its fair share."""
    args: dict[str, object] = {"holder": holder, "lease": lease_seconds}
    async with conn.transaction():
        await conn.execute(_ALIVE, args)
        await conn.execute(_FORGET)  # instances killed and never back: the table stays small
        cur = await conn.execute(_COUNTS)
        row = await cur.fetchone()
        instances, cameras = (max(1, int(row[0])), int(row[1])) if row else (1, 0)
        fair = math.ceil(cameras / instances)
        share = min(max_cameras, fair)
        await conn.execute(_RELEASE_GONE, args)
        cur = await conn.execute(_RENEW, args)
        held = sorted(str(r[0]) for r in await cur.fetchall())
        if len(held) > share:
            excess, held = held[share:], held[:share]
            await conn.execute(_RELEASE_SOME, {**args, "ids": excess})
        elif len(held) < share:
            await conn.execute(_ROWS)
            cur = await conn.execute(_CLAIM, {**args, "want": share - len(held)})
            held = sorted(held + [str(r[0]) for r in await cur.fetchall()])
    return Share(held, instances, cameras, max(0, fair - max_cameras))


async def release(conn: psycopg.AsyncConnection, holder: str) -> None:
    """Give up every lease of this instance (a clean stop): the others claim them at once."""
    async with conn.transaction():
        await conn.execute(_RELEASE_ALL, {"holder": holder})
        await conn.execute(_GONE, {"holder": holder})
