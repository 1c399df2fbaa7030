"""Snapshot files: the latest replaced atomically, a history bounded in files and rows alike
(also across a restart), device ids that never become a path outside the directory, JPEGs over
the bound re-encoded or refused (counted), and the placeholder."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import psycopg
import pytest
from prometheus_client import CollectorRegistry

from streams.settings import StreamsSettings
from streams.snapshots import (
    LATEST,
    BadDeviceId,
    SnapshotMetrics,
    SnapshotStore,
    history_name,
    placeholder_jpeg,
)

T0 = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)


def jpeg(seed: int, size: tuple[int, int] = (320, 240), quality: int = 80) -> bytes:
    noise = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)
    ok, encoded = cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return bytes(encoded.tobytes())


def decoded(data: bytes) -> np.ndarray:  # type: ignore[type-arg]
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a JPEG that decodes"
    return image


async def _camera(db: str, *device_ids: str) -> psycopg.AsyncConnection:
    conn = await psycopg.AsyncConnection.connect(db, autocommit=True)
    for device_id in device_ids:
        await conn.execute(
            "INSERT INTO devices (device_id, name, device_type, kecamatan)"
            " VALUES (%s, %s, 'camera', 'tambun-selatan')",
            (device_id, f"Kamera {device_id}"),
        )
    return conn


def _store(directory: Path, **settings: object) -> tuple[SnapshotStore, CollectorRegistry]:
    registry = CollectorRegistry()
    store = SnapshotStore(directory, StreamsSettings(**settings), SnapshotMetrics(registry))
    return store, registry


async def test_latest_is_replaced_atomically(migrated_db: str, tmp_path: Path) -> None:
    store, registry = _store(tmp_path, snapshot_every_seconds=3600)
    pictures = [jpeg(1, (640, 480)), jpeg(2, (160, 120))]  # different sizes: a torn file shows
    latest = tmp_path / "cctv-01" / LATEST
    seen: list[bytes] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            try:
                seen.append(latest.read_bytes())
            except FileNotFoundError:
                continue

    async with await _camera(migrated_db, "cctv-01") as conn:
        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for n in range(60):
                await store.save(conn, "cctv-01", T0 + timedelta(seconds=n), pictures[n % 2])
        finally:
            done.set()
            thread.join()
    assert seen, "the reader never saw a file"
    assert all(s in pictures for s in seen), "a reader saw a partly written latest.jpg"
    assert latest.read_bytes() == pictures[1]
    assert [p.name for p in latest.parent.iterdir() if p.name.startswith(".tmp")] == []
    assert latest.stat().st_mtime == pytest.approx((T0 + timedelta(seconds=59)).timestamp())
    assert registry.get_sample_value("pantau_camera_snapshots_saved_total") == 60


async def test_history_is_bounded_in_files_and_rows_across_a_restart(
    migrated_db: str, tmp_path: Path
) -> None:
    settings = {"snapshot_every_seconds": 10, "snapshot_history": 3}
    store, registry = _store(tmp_path, **settings)
    folder = tmp_path / "cctv-01"

    async def kept(conn: psycopg.AsyncConnection) -> tuple[list[str], list[str]]:
        cur = await conn.execute(
            "SELECT file_name FROM camera_snapshots WHERE device_id = 'cctv-01' ORDER BY 1"
        )
        rows = [str(r[0]) for r in await cur.fetchall()]
        files = sorted(p.name for p in folder.iterdir() if p.name != LATEST)
        return rows, files

    def name(seconds: float) -> str:
        return history_name(T0 + timedelta(seconds=seconds)) + ".jpg"

    async with await _camera(migrated_db, "cctv-01") as conn:
        for seconds in range(0, 60, 5):  # every 5 s; the history takes one per 10 s
            await store.save(conn, "cctv-01", T0 + timedelta(seconds=seconds), jpeg(seconds))
        rows, files = await kept(conn)
        assert rows == files == [name(30), name(40), name(50)]
        assert registry.get_sample_value("pantau_camera_snapshots_history_total") == 6
        assert registry.get_sample_value("pantau_camera_snapshots_pruned_total") == 3

        # A crash left a file without a row and a row without a file; Pantau starts again.
        (folder / name(51)).write_bytes(jpeg(99))
        (folder / name(40)).unlink()
        restarted, _ = _store(tmp_path, **settings)
        await restarted.save(conn, "cctv-01", T0 + timedelta(seconds=55), jpeg(55))
        rows, files = await kept(conn)
        # the history's last time came from the table: 55 s is too soon after 50 s
        assert rows == files == [name(30), name(50)]
        for seconds in (60, 70, 80):
            await restarted.save(conn, "cctv-01", T0 + timedelta(seconds=seconds), jpeg(seconds))
        rows, files = await kept(conn)
        assert rows == files == [name(60), name(70), name(80)]
        assert (folder / name(80)).read_bytes() == (folder / LATEST).read_bytes()


@pytest.mark.parametrize(
    "device_id", ["../outside", "..", ".", "", "a/b", "/etc", "cctv\n", "x" * 200, "-rf"]
)
async def test_a_device_id_never_becomes_a_path_outside(tmp_path: Path, device_id: str) -> None:
    inside = tmp_path / "snapshots"
    store, _ = _store(inside)
    with pytest.raises(BadDeviceId):
        await store.save(None, device_id, T0, jpeg(1))  # type: ignore[arg-type]
    with pytest.raises(BadDeviceId):
        await store.latest(device_id)
    assert not inside.exists()  # nothing written, not even the directory


async def test_history_file_names_are_checked(tmp_path: Path) -> None:
    store, _ = _store(tmp_path / "snapshots")
    (tmp_path / "secret.jpg").write_bytes(b"\xff\xd8\xffsecret")
    (tmp_path / "snapshots" / "cctv-01").mkdir(parents=True)
    assert await store.history_file("cctv-01", "../../secret.jpg") is None
    assert await store.history_file("cctv-01", "latest.jpg") is None


async def test_too_big_is_reencoded_and_not_a_jpeg_refused(
    migrated_db: str, tmp_path: Path
) -> None:
    store, registry = _store(tmp_path, snapshot_max_bytes=65_536, snapshot_every_seconds=3600)
    big = jpeg(7, (1280, 720), quality=95)
    assert len(big) > 65_536
    async with await _camera(migrated_db, "cctv-01") as conn:
        await store.save(conn, "cctv-01", T0, big)
        picture = await store.latest("cctv-01")
        assert picture is not None
        assert len(picture.jpeg) <= 65_536
        assert decoded(picture.jpeg).shape[2] == 3
        assert registry.get_sample_value("pantau_camera_snapshots_reencoded_total") == 1

        await store.save(conn, "cctv-01", T0 + timedelta(seconds=1), b"<html>not a picture")
        assert (await store.latest("cctv-01")) == picture  # kept the last good one
        refused = registry.get_sample_value(
            "pantau_camera_snapshots_refused_total", {"reason": "not_jpeg"}
        )
        assert refused == 1


async def test_saving_runs_off_the_event_loop(migrated_db: str, tmp_path: Path) -> None:
    """While a big snapshot is re-encoded and written, the loop keeps ticking."""
    store, _ = _store(tmp_path, snapshot_max_bytes=16_384)
    big = jpeg(8, (1920, 1080), quality=100)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    async with await _camera(migrated_db, "cctv-01") as conn:
        ticker = asyncio.create_task(tick())
        try:
            await store.save(conn, "cctv-01", T0, big)
        finally:
            ticker.cancel()
    assert ticks >= 3, "the event loop was blocked while the snapshot was saved"


@pytest.mark.parametrize("reason", ["stalled", "auth", "frozen", "no_snapshot", "stale", None])
def test_the_placeholder_is_a_720p_jpeg(reason: str | None) -> None:
    since = datetime(2026, 12, 1, 7, 3, tzinfo=UTC)  # 14:03 WIB
    data = placeholder_jpeg("cctv-tambun-07", "Simpang Tambun", since, reason)
    image = decoded(data)
    assert image.shape == (720, 1280, 3)
    assert 25 < float(image.mean()) < 90  # dark grey, with text on it
    assert float(image.std()) > 10


def test_the_placeholder_says_what_differs() -> None:
    since = datetime(2026, 12, 1, 7, 3, tzinfo=UTC)
    one = placeholder_jpeg("cctv-01", None, since, "stalled")
    assert one == placeholder_jpeg("cctv-01", None, since, "stalled")  # cached, the same
    others = {
        placeholder_jpeg("cctv-02", None, since, "stalled"),
        placeholder_jpeg("cctv-01", None, since + timedelta(minutes=1), "stalled"),
        placeholder_jpeg("cctv-01", None, since, "auth"),
        placeholder_jpeg("cctv-01", "Jl. Raya Ñ ☃ name", since, "stalled"),  # not ASCII: drawn
    }
    assert one not in others
    assert len(others) == 4
