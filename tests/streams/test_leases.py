"""Camera leases on a real PostgreSQL: fair shares, takeover after a missed lease, release,
concurrent claims (FOR UPDATE SKIP LOCKED) never giving one camera to two instances."""

from __future__ import annotations

import asyncio
import time

import psycopg

from streams import leases, store
from streams.settings import StreamsSettings
from tests.streams.test_store import _camera

LEASE = 1.0


async def _cameras(conn: psycopg.AsyncConnection, count: int) -> list[str]:
    ids = [f"cam-{i:02d}" for i in range(count)]
    for device_id in ids:
        await _camera(conn, device_id)
    return ids


async def _refresh(
    conn: psycopg.AsyncConnection, holder: str, max_cameras: int = 1000
) -> list[str]:
    return (await leases.refresh(conn, holder, LEASE, max_cameras)).held


async def _settle(conn: psycopg.AsyncConnection, holders: list[str]) -> dict[str, list[str]]:
    """Refresh every holder in turn until nobody's share changes (at most 5 rounds)."""
    last: dict[str, list[str]] = {}
    for _ in range(5):
        now = {h: await _refresh(conn, h) for h in holders}
        if now == last:
            return now
        last = now
    return last


async def test_fair_shares_takeover_and_release(migrated_db: str) -> None:
    async with await psycopg.AsyncConnection.connect(migrated_db, autocommit=True) as conn:
        ids = await _cameras(conn, 7)
        assert await _refresh(conn, "a") == ids  # alone: every camera
        assert await _refresh(conn, "b") == []  # a's leases still run
        shares = await _settle(conn, ["a", "b", "c"])
        assert sorted(len(s) for s in shares.values()) == [1, 3, 3]  # ceil(7 / 3) = 3
        held = [d for s in shares.values() for d in s]
        assert sorted(held) == ids  # every camera, each once

        # c stops renewing (killed): after one lease its cameras go to a and b.
        lost = shares["c"]
        started = time.monotonic()
        while time.monotonic() - started < LEASE * 2:
            await _refresh(conn, "a")
            await _refresh(conn, "b")
            taken = set((await _refresh(conn, "a")) + (await _refresh(conn, "b")))
            if set(lost) <= taken:
                break
            await asyncio.sleep(0.1)
        assert set(lost) <= taken, (lost, taken)
        assert time.monotonic() - started < LEASE * 2
        a, b = await _refresh(conn, "a"), await _refresh(conn, "b")
        assert sorted(a + b) == ids
        assert sorted([len(a), len(b)]) == [3, 4]  # ceil(7 / 2) = 4

        # b stops cleanly: a claims its cameras at its next refresh, no lease to wait for.
        await leases.release(conn, "b")
        assert await _refresh(conn, "a") == ids

        # c comes back: a gives up the excess, c claims it.
        shares = await _settle(conn, ["a", "c"])
        assert sorted(len(s) for s in shares.values()) == [3, 4]
        assert sorted(shares["a"] + shares["c"]) == ids


async def test_only_cameras_to_probe_and_max_cameras(migrated_db: str) -> None:
    async with await psycopg.AsyncConnection.connect(migrated_db, autocommit=True) as conn:
        ids = await _cameras(conn, 4)
        await _camera(conn, "cam-off", enabled=False)
        share = await leases.refresh(conn, "a", LEASE, 3)
        assert share.held == ids[:3]
        assert (share.instances, share.cameras, share.unprobed) == (1, 4, 1)
        await conn.execute("UPDATE cameras SET enabled = false WHERE device_id = 'cam-00'")
        share = await leases.refresh(conn, "a", LEASE, 3)
        assert share.held == ids[1:4]  # cam-00 released, cam-03 claimed
        row = await (
            await conn.execute("SELECT holder FROM camera_leases WHERE device_id = 'cam-00'")
        ).fetchone()
        assert row == (None,)
        loaded = await store.load_cameras(conn, StreamsSettings(), only=share.held)
        assert [c.device_id for c in loaded.cameras] == ids[1:4]


async def test_concurrent_claims_never_share_a_camera(migrated_db: str) -> None:
    async with await psycopg.AsyncConnection.connect(migrated_db, autocommit=True) as conn:
        ids = await _cameras(conn, 30)
        holders = [f"i{n}" for n in range(5)]
        for holder in holders:  # all five alive before anyone claims
            await conn.execute(
                "INSERT INTO camera_lease_holders (holder, expires_at)"
                " VALUES (%s, now() + interval '1 minute')",
                (holder,),
            )
    conns = [await psycopg.AsyncConnection.connect(migrated_db, autocommit=True) for _ in holders]
    try:
        for _ in range(3):
            shares = await asyncio.gather(
                *(_refresh(c, h) for c, h in zip(conns, holders, strict=True))
            )
            held = [d for s in shares for d in s]
            assert len(held) == len(set(held))  # never one camera to two instances
        assert sorted(held) == ids
        assert all(len(s) == 6 for s in shares)
    finally:
        for c in conns:
            await c.close()
