"""The outage detector against a real PostgreSQL: passes at chosen times over arrivals written
as the ingestion writer writes them (device_last_seen.last_received_at)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from devices.outages.detector import LOCK_KEY, Detector, hold_lock
from devices.outages.settings import OutagesSettings, WebhookSettings
from tests.fixtures.outages import arrive, register

T0 = datetime.now(UTC) + timedelta(days=1)  # after every device's registration
SETTINGS = OutagesSettings(
    alertmanager_urls=["http://127.0.0.1:9"],
    webhooks=[WebhookSettings(name="hook", url="http://127.0.0.1:9/", secret="s")],  # type: ignore[arg-type]
)


async def _connect(db: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(db, autocommit=True)


async def _state(conn: psycopg.AsyncConnection, device_id: str) -> tuple[str, str | None]:
    cur = await conn.execute(
        "SELECT state, cause FROM device_liveness WHERE device_id = %s", (device_id,)
    )
    row = await cur.fetchone()
    assert row is not None
    return row[0], row[1]


async def _outages(conn: psycopg.AsyncConnection) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute("SELECT * FROM outages ORDER BY id")
    return await cur.fetchall()


async def _outbox(conn: psycopg.AsyncConnection) -> list[tuple[int, str, str, str]]:
    cur = await conn.execute(
        "SELECT outage_id, event, receiver, status FROM alert_outbox ORDER BY id"
    )
    return await cur.fetchall()  # type: ignore[return-value]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def test_silence_makes_a_device_late_then_down_and_back_up_damped(migrated_db: str) -> None:
    detector = Detector(SETTINGS)
    async with await _connect(migrated_db) as conn:
        await register(conn, "wl-setu-01")
        await arrive(conn, "wl-setu-01", at(0))
        await detector.run_pass(conn, at(100))
        assert await _state(conn, "wl-setu-01") == ("up", None)
        await detector.run_pass(conn, at(130))  # 2x the interval: late, no outage
        assert await _state(conn, "wl-setu-01") == ("late", None)
        assert await _outages(conn) == []
        result = await detector.run_pass(conn, at(250))  # past 4x: down
        assert result.opened == 1
        assert await _state(conn, "wl-setu-01") == ("down", "silent")
        [outage] = await _outages(conn)
        assert outage["kind"] == "device"
        assert outage["cause"] == "silent"
        assert outage["started_at"] == at(60)  # the first report that did not come
        assert outage["ended_at"] is None
        assert await _outbox(conn) == [
            (outage["id"], "raised", "alertmanager", "pending"),
            (outage["id"], "raised", "hook", "pending"),
        ]
        # One report, then silence again: not back (flapping damped), the same outage.
        await arrive(conn, "wl-setu-01", at(300))
        await detector.run_pass(conn, at(305))
        assert await _state(conn, "wl-setu-01") == ("down", "silent")
        await detector.run_pass(conn, at(440))  # late again: recovery starts over
        await detector.run_pass(conn, at(600))
        assert len(await _outages(conn)) == 1
        assert (await _outages(conn))[0]["ended_at"] is None
        # Reporting steadily for 3 intervals ends it, from its first report back.
        for t in (700, 760, 820, 880):
            await arrive(conn, "wl-setu-01", at(t))
            await detector.run_pass(conn, at(t + 5))
        assert await _state(conn, "wl-setu-01") == ("up", None)
        [outage] = await _outages(conn)
        assert outage["ended_at"] == at(700)
        events = [(e, r) for _, e, r, _ in await _outbox(conn)]
        assert events.count(("resolved", "alertmanager")) == 1
        assert events.count(("resolved", "hook")) == 1


async def test_a_status_report_marks_a_device_at_once(migrated_db: str) -> None:
    detector = Detector(SETTINGS)
    async with await _connect(migrated_db) as conn:
        await register(conn, "wl-setu-02")
        await arrive(conn, "wl-setu-02", at(0))
        await detector.run_pass(conn, at(5))
        cur = await conn.execute(
            "SELECT pantau_report_status('wl-setu-02', false, 'offline', %s),"
            "       pantau_report_status('nobody', false, 'offline', %s)",
            (at(10), at(10)),
        )
        assert await cur.fetchone() == (True, False)
        await detector.run_pass(conn, at(11))
        assert await _state(conn, "wl-setu-02") == ("down", "offline")
        [outage] = await _outages(conn)
        assert outage["started_at"] == at(10)
        # A reading after the report means the device is alive: it recovers, damped.
        for t in (20, 80, 140, 200):
            await arrive(conn, "wl-setu-02", at(t))
            await detector.run_pass(conn, at(t + 1))
        assert await _state(conn, "wl-setu-02") == ("up", None)


async def test_a_camera_is_judged_on_its_probe_interval_and_paused_without_a_stream(
    migrated_db: str,
) -> None:
    """Cameras report through their probes: every `probe_interval_seconds`, not the type's 10 s;
    one with no stream set, or its stream disabled, is probed by nobody and must not alert."""
    detector = Detector(SETTINGS)
    async with await _connect(migrated_db) as conn:
        for cam in ("cam-setu-01", "cam-setu-02", "cam-setu-03"):
            await register(conn, cam, interval=None, device_type="camera")
            await arrive(conn, cam, at(0))
        await conn.execute(
            "INSERT INTO cameras (device_id, rtsp_url, probe_interval_seconds, enabled) VALUES"
            " ('cam-setu-01', 'rtsp://10.0.0.1/a', 60, true),"
            " ('cam-setu-03', 'rtsp://10.0.0.1/c', 10, false)"
        )
        await detector.run_pass(conn, at(150))  # past 4 x 10 s, not 4 x 60 s
        assert await _state(conn, "cam-setu-01") == ("late", None)
        assert await _state(conn, "cam-setu-02") == ("paused", None)
        assert await _state(conn, "cam-setu-03") == ("paused", None)
        await detector.run_pass(conn, at(250))
        assert await _state(conn, "cam-setu-01") == ("down", "silent")
        assert [o["device_id"] for o in await _outages(conn)] == ["cam-setu-01"]


async def test_maintenance_never_alerts_and_ends_an_outage(migrated_db: str) -> None:
    detector = Detector(SETTINGS)
    async with await _connect(migrated_db) as conn:
        await register(conn, "wl-setu-03")
        await register(conn, "wl-setu-04")
        await arrive(conn, "wl-setu-03", at(0))
        await arrive(conn, "wl-setu-04", at(0))
        await conn.execute(
            "INSERT INTO maintenance_windows (device_id, starts_at, ends_at, created_by)"
            " VALUES ('wl-setu-03', %s, %s, 'test')",
            (at(0), at(1000)),
        )
        await detector.run_pass(conn, at(300))
        assert await _state(conn, "wl-setu-03") == ("paused", None)
        assert await _state(conn, "wl-setu-04") == ("down", "silent")
        await conn.execute(
            "UPDATE devices SET status = 'maintenance' WHERE device_id = 'wl-setu-04'"
        )
        await detector.run_pass(conn, at(310))
        assert await _state(conn, "wl-setu-04") == ("paused", None)
        [outage] = await _outages(conn)
        assert outage["device_id"] == "wl-setu-04"
        assert outage["ended_at"] == at(310)


async def test_a_darkened_kecamatan_is_one_area_outage(migrated_db: str) -> None:
    detector = Detector(SETTINGS)
    async with await _connect(migrated_db) as conn:
        ids = [f"wl-babelan-{i}" for i in range(5)]
        for device in ids:
            await register(conn, device, "babelan")
            await arrive(conn, device, at(0))
        await register(conn, "wl-setu-09")
        await arrive(conn, "wl-setu-09", at(0))
        await detector.run_pass(conn, at(10))
        for device in [*ids[3:], "wl-setu-09"]:  # keep reporting
            await arrive(conn, device, at(280))
        result = await detector.run_pass(conn, at(300))  # 3 of 5 in Babelan down
        assert (result.opened, result.areas_opened) == (3, 1)
        outages = await _outages(conn)
        [area] = [o for o in outages if o["kind"] == "area"]
        assert area["kecamatan"] == "babelan"
        assert area["detail"] == {"down": 3, "total": 5, "share": 0.6}
        children = [o for o in outages if o["kind"] == "device"]
        assert {o["parent_id"] for o in children} == {area["id"]}
        box = await _outbox(conn)
        assert {s for o, _, _, s in box if o != area["id"]} == {"grouped"}
        assert [(e, s) for o, e, _, s in box if o == area["id"]] == [
            ("raised", "pending"),
            ("raised", "pending"),
        ]
        # They come back: the area ends, and nothing is sent for the grouped devices.
        for t in (400, 460, 520, 580, 640):
            for device in [*ids, "wl-setu-09"]:
                await arrive(conn, device, at(t))
            await detector.run_pass(conn, at(t + 1))
        outages = await _outages(conn)
        assert all(o["ended_at"] is not None for o in outages)
        box = await _outbox(conn)
        assert [e for o, e, _, _ in box if o == area["id"]].count("resolved") == 2
        assert [o for o, e, _, _ in box if e == "resolved" and o != area["id"]] == []


async def test_one_detector_at_a_time(migrated_db: str) -> None:
    async with await _connect(migrated_db) as first, await _connect(migrated_db) as second:
        assert await hold_lock(first)
        assert not await hold_lock(second)
        await first.close()  # the holder dies: its lock goes with its connection
        # ... once its backend has exited, which the server does after the client has gone.
        deadline = asyncio.get_running_loop().time() + 10
        while not await hold_lock(second):
            assert asyncio.get_running_loop().time() < deadline, "the lock was never released"
            await asyncio.sleep(0.05)


def test_the_detector_lock_is_not_the_migration_lock() -> None:
    from pantau.migrate import MIGRATION_LOCK_KEY

    assert LOCK_KEY != MIGRATION_LOCK_KEY
