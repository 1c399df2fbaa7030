"""Camera leases on a real PostgreSQL: fair shares, takeover after a missed lease, release,
concurrent claims (FOR UPDATE SKIP LOCKED) never giving one camera to two instances."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry

from pantau.errors import DatabaseUnavailable
from streams import leases, store
from streams.settings import StreamsSettings
from tests.streams.test_service import StandIn, _alive, _running, _wait
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


# --- the camera-probes worker with leases (the probe is test_service's stand-in) ---------------


async def test_workers_split_the_cameras_and_hand_them_over_at_shutdown(migrated_db: str) -> None:
    async with await psycopg.AsyncConnection.connect(migrated_db, autocommit=True) as conn:
        ids = await _cameras(conn, 4)
    settings = StreamsSettings(stagger_seconds=0, lease_seconds=LEASE)
    standin = StandIn()
    registry = CollectorRegistry()
    async with _running(migrated_db, standin, registry, settings=settings, holder="a") as a:
        await _wait("a probes every camera", lambda: sorted(_alive(a)) == ids)
        async with _running(
            migrated_db, standin, CollectorRegistry(), settings=settings, holder="b"
        ) as b:

            def split() -> object:
                both = sorted(_alive(a)) + sorted(_alive(b))
                return (len(_alive(a)) == 2 and sorted(both) == ids) or (_alive(a), _alive(b))

            await _wait("two each", split, within=LEASE * 3)
        # b stopped: released at once, a takes them at its next refresh (a third of a lease).
        await _wait("a probes every camera again", lambda: sorted(_alive(a)) == ids, LEASE)
        assert registry.get_sample_value("pantau_camera_leases") == 4


async def test_probes_stop_when_the_leases_cannot_be_renewed(migrated_db: str) -> None:
    async with await psycopg.AsyncConnection.connect(migrated_db, autocommit=True) as conn:
        ids = await _cameras(conn, 2)
        down = False

        async def connect() -> psycopg.AsyncConnection[Any]:
            if down:
                raise DatabaseUnavailable("the test took the database away")
            return await psycopg.AsyncConnection.connect(migrated_db, autocommit=True)

        settings = StreamsSettings(stagger_seconds=0, lease_seconds=LEASE)
        standin = StandIn()
        async with _running(
            migrated_db, standin, CollectorRegistry(), settings=settings, holder="a"
        ) as probes:
            probes._connect = connect
            await _wait("probing", lambda: sorted(_alive(probes)) == ids)
            down = True  # no new connection, and the open ones are cut
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            started = time.monotonic()
            await asyncio.sleep(LEASE / 2)
            assert sorted(_alive(probes)) == ids  # within the lease: the probes go on
            await _wait("probes stopped after a lease", lambda: _alive(probes) == {}, LEASE * 2)
            assert time.monotonic() - started >= LEASE * 0.9
            down = False
            await _wait("probing again", lambda: sorted(_alive(probes)) == ids, LEASE * 2)
