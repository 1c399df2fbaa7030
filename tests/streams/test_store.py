"""The probes' database side against a real PostgreSQL: which cameras are loaded, a batch of
judged intervals landing in one transaction, and the outage detector's next pass acting on it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from devices import registry
from devices.models import DeviceIn
from devices.outages.detector import Detector
from devices.outages.settings import OutagesSettings
from streams import store
from streams.report import IntervalReport, Thresholds, Verdict
from streams.settings import StreamsSettings

SETTINGS = StreamsSettings(black_luma=15, frozen_samples=4)


async def _camera(
    conn: psycopg.AsyncConnection,
    device_id: str,
    *,
    status: str = "active",
    enabled: bool = True,
    device_type: str = "camera",
    black_luma: float | None = None,
    interval: int | None = None,
) -> None:
    data: dict[str, Any] = {
        "device_id": device_id,
        "name": device_id,
        "device_type": device_type,
        "kecamatan": "setu",
        "expected_interval_seconds": interval,
    }
    await registry.create_device(conn, DeviceIn.model_validate(data), "test")
    if status != "active":
        await conn.execute(
            "UPDATE devices SET status = %s WHERE device_id = %s", (status, device_id)
        )
    await conn.execute(
        "INSERT INTO cameras (device_id, rtsp_url, probe_interval_seconds, enabled, black_luma)"
        " VALUES (%s, %s, 2, %s, %s)",
        (device_id, f"rtsp://u:p@cam/{device_id}", enabled, black_luma),
    )


def _report(device_id: str, at: float, *, online: bool = True, **kw: Any) -> IntervalReport:
    if online:
        kw = {"fps": 10.0, "bitrate_kbps": 350.0, "codec": "h264", "width": 320, **kw}
    return IntervalReport(device_id, at - 2, at, online, **kw)


async def _rows(conn: psycopg.AsyncConnection, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    cur = await conn.execute(sql, args)
    return await cur.fetchall()


async def _now(conn: psycopg.AsyncConnection) -> datetime:
    [(now,)] = await _rows(conn, "SELECT now()")
    return now  # type: ignore[no-any-return]


async def test_cameras_loaded_are_enabled_registered_cameras_in_order(migrated_db: str) -> None:
    async with await psycopg.AsyncConnection.connect(migrated_db, autocommit=True) as conn:
        await _camera(conn, "cam-c", black_luma=30)
        await _camera(conn, "cam-a")
        await _camera(conn, "cam-b", status="maintenance")
        await _camera(conn, "cam-off", enabled=False)
        await _camera(conn, "cam-gone", status="retired")
        await _camera(conn, "wl-1", device_type="water_level")  # a row, but not a camera
        loaded = await store.load_cameras(conn, SETTINGS)
        assert [c.device_id for c in loaded.cameras] == ["cam-a", "cam-b", "cam-c"]
        assert loaded.unprobed == 0
        a, _, c = loaded.cameras
        assert a.thresholds == Thresholds(black_luma=15, covered_ratio=0.25, frozen_samples=4)
        assert c.thresholds.black_luma == 30  # the camera's own
        assert a.probe_interval_seconds == 2
        assert a.rtsp_url == "rtsp://u:p@cam/cam-a"
        assert "u:p" not in repr(a)
        limited = await store.load_cameras(conn, SETTINGS.model_copy(update={"max_cameras": 2}))
        assert [c.device_id for c in limited.cameras] == ["cam-a", "cam-b"]
        assert limited.unprobed == 1
        none = await store.load_cameras(conn, SETTINGS.model_copy(update={"max_cameras": 0}))
        assert none == store.Loaded([], 3)


async def test_a_batch_lands_in_one_transaction(migrated_db: str) -> None:
    async with await psycopg.AsyncConnection.connect(migrated_db, autocommit=True) as conn:
        await _camera(conn, "cam-1")
        await _camera(conn, "cam-2")
        t = time.time()
        batch = [
            (_report("cam-1", t - 2, keyframes=2, packets=20), Verdict("ok", luma=90.0)),
            (_report("cam-1", t, keyframes=2), Verdict("ok", luma=91.0, change=0.2)),
            (
                _report("cam-2", t, online=False, reason="not_found"),
                Verdict("offline", "not_found"),
            ),
            (_report("cam-unregistered", t), Verdict("ok")),
        ]
        written = await store.write_batch(conn, batch)
        assert written == store.Written(health_rows=3, readings=7, statuses=2, unknown=1)
        health = await _rows(
            conn,
            "SELECT device_id, state, reason, fps, luma, change, packets FROM camera_health"
            " ORDER BY device_id, time",
        )
        assert health == [
            ("cam-1", "ok", None, 10.0, 90.0, None, 20),
            ("cam-1", "ok", None, 10.0, 91.0, 0.2, 0),
            ("cam-2", "offline", "not_found", None, None, None, 0),
        ]
        readings = await _rows(
            conn,
            "SELECT device_id, metric, value FROM readings WHERE time = %s ORDER BY 1, 2",
            datetime.fromtimestamp(t, UTC),
        )
        assert readings == [
            ("cam-1", "bitrate_kbps", 350.0),
            ("cam-1", "fps", 10.0),
            ("cam-1", "online", 1.0),
            ("cam-2", "online", 0.0),
        ]
        # The arrival and the status share the transaction's now(): the detector honours it.
        seen = await _rows(
            conn,
            "SELECT s.device_id, s.last_reading_at, s.last_received_at = l.reported_at,"
            "       l.reported_state, l.reported_cause"
            " FROM device_last_seen s JOIN device_liveness l USING (device_id) ORDER BY 1",
        )
        assert seen == [
            ("cam-1", datetime.fromtimestamp(t, UTC), True, "up", "ok"),
            ("cam-2", datetime.fromtimestamp(t, UTC), True, "down", "offline:not_found"),
        ]
        assert (
            await _rows(conn, "SELECT 1 FROM device_last_seen WHERE device_id LIKE '%%unreg%%'")
            == []
        )
        # Written again (a retry after a lost commit answer): nothing doubles, nothing fails.
        again = await store.write_batch(conn, batch)
        assert (again.health_rows, again.readings) == (0, 0)
        [(count,)] = await _rows(conn, "SELECT count(*) FROM camera_health")
        assert count == 3


async def test_a_late_batch_gets_its_partition_and_reaches_the_rollups(migrated_db: str) -> None:
    async with await psycopg.AsyncConnection.connect(migrated_db, autocommit=True) as conn:
        await _camera(conn, "cam-1")
        old = time.time() - 40 * 86400  # no partition of readings this far back
        written = await store.write_batch(conn, [(_report("cam-1", old), Verdict("ok"))])
        assert written.readings == 3
        [(pending,)] = await _rows(conn, "SELECT count(*) FROM rollup_pending")
        assert pending == 1


async def test_a_frozen_camera_opens_an_outage_and_recovers(migrated_db: str) -> None:
    outages = OutagesSettings(recovery_factor=0, recovery_min_seconds=0)
    detector = Detector(outages)
    async with await psycopg.AsyncConnection.connect(migrated_db, autocommit=True) as conn:
        await _camera(conn, "cam-1", interval=10)
        await store.write_batch(conn, [(_report("cam-1", time.time()), Verdict("ok"))])
        await detector.run_pass(conn, await _now(conn))
        [(state,)] = await _rows(conn, "SELECT state FROM device_liveness")
        assert state == "up"
        frozen = Verdict("frozen", "no change in 4 samples", change=0.0)
        await store.write_batch(conn, [(_report("cam-1", time.time()), frozen)])
        result = await detector.run_pass(conn, await _now(conn))
        assert result.opened == 1
        [(kind, cause, ended)] = await _rows(conn, "SELECT kind, cause, ended_at FROM outages")
        assert (kind, cause, ended) == ("device", "frozen", None)
        # Still frozen a batch later: the same outage, still open.
        await store.write_batch(conn, [(_report("cam-1", time.time()), frozen)])
        assert (await detector.run_pass(conn, await _now(conn))).opened == 0
        # The picture moves again: up, the outage ends.
        await store.write_batch(conn, [(_report("cam-1", time.time()), Verdict("ok"))])
        await detector.run_pass(conn, await _now(conn))
        result = await detector.run_pass(conn, await _now(conn) + timedelta(seconds=1))
        [(ended,)] = await _rows(conn, "SELECT ended_at FROM outages")
        assert ended is not None
        assert await _rows(conn, "SELECT state, cause FROM device_liveness") == [("up", None)]


async def test_old_health_rows_are_deleted(migrated_db: str) -> None:
    async with await psycopg.AsyncConnection.connect(migrated_db, autocommit=True) as conn:
        await _camera(conn, "cam-1")
        now = time.time()
        batch = [
            (_report("cam-1", now - 31 * 86400), Verdict("ok")),
            (_report("cam-1", now - 29 * 86400), Verdict("ok")),
            (_report("cam-1", now), Verdict("ok")),
        ]
        await store.write_batch(conn, batch)
        assert await store.delete_old_health(conn, 30) == 1
        [(count,)] = await _rows(conn, "SELECT count(*) FROM camera_health")
        assert count == 2


async def test_an_empty_batch_writes_nothing(migrated_db: str) -> None:
    async with await psycopg.AsyncConnection.connect(migrated_db, autocommit=True) as conn:
        assert await store.write_batch(conn, []) == store.Written(0, 0, 0, 0)


async def test_an_unchanged_up_status_is_not_told_again_a_down_one_always(
    migrated_db: str,
) -> None:
    async def reported_at(conn: psycopg.AsyncConnection) -> datetime:
        [(at,)] = await _rows(conn, "SELECT reported_at FROM device_liveness")
        return at  # type: ignore[no-any-return]

    reported_up: dict[str, str] = {}
    async with await psycopg.AsyncConnection.connect(migrated_db, autocommit=True) as conn:
        await _camera(conn, "cam-1")
        ok = Verdict("ok")
        await store.write_batch(conn, [(_report("cam-1", time.time()), ok)], reported_up)
        first = await reported_at(conn)
        assert reported_up == {"cam-1": "ok"}
        # Up again: arrival written, status spared (no NOTIFY, no extra detector pass).
        written = await store.write_batch(conn, [(_report("cam-1", time.time()), ok)], reported_up)
        assert (written.health_rows, written.statuses) == (1, 0)
        assert await reported_at(conn) == first
        # Down: told on every batch, so it stays no older than the arrival.
        frozen = Verdict("frozen")
        for _ in range(2):
            await store.write_batch(conn, [(_report("cam-1", time.time()), frozen)], reported_up)
            [(fresh,)] = await _rows(
                conn,
                "SELECT l.reported_at = s.last_received_at AND l.reported_state = 'down'"
                " FROM device_liveness l JOIN device_last_seen s USING (device_id)",
            )
            assert fresh is True
        assert reported_up == {}
        # Up after down: told.
        written = await store.write_batch(conn, [(_report("cam-1", time.time()), ok)], reported_up)
        assert written.statuses == 1
        assert await _rows(conn, "SELECT reported_state FROM device_liveness") == [("up",)]
