"""The camera-probes worker's own logic against a real PostgreSQL: threads started, stopped and
restarted as the cameras table changes, staggered first opens, the bounded hand-off, shutdown
against a deadline. The probe here is a stand-in (`standin_run_camera`) so these tests control
what a thread does; tests/streams/test_outage.py runs the real probe on real test cameras."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from pantau.errors import DatabaseUnavailable
from streams import service
from streams.health import Judge
from streams.report import CameraConfig, IntervalReport, Verdict
from streams.service import CameraProbes, ServiceMetrics
from streams.settings import StreamsSettings
from tests.streams.test_store import _camera

SECRET = "rahasia-kamera"


@dataclass
class StandIn:
    """A stand-in for streams.probe.run_camera: emits an online report every `every` seconds
    until stopped, and records each start (device, url, first_delay) and each return."""

    every: float = 0.1
    ignore_stop: threading.Event | None = None  # set: the thread ignores stop until this is set
    fail_first: set[str] = field(default_factory=set)  # these devices' first run raises
    starts: list[tuple[str, str, float]] = field(default_factory=list)
    returned: list[str] = field(default_factory=list)
    emitted: int = 0

    def __call__(
        self,
        config: CameraConfig,
        settings: StreamsSettings,
        emit: Callable[[IntervalReport], None],
        stop: threading.Event,
        open_gate: threading.Semaphore,
        metrics: Any,
        first_delay: float = 0.0,
    ) -> None:
        self.starts.append((config.device_id, config.rtsp_url, first_delay))
        if config.device_id in self.fail_first:
            self.fail_first.discard(config.device_id)
            raise RuntimeError(f"cannot open {config.rtsp_url}")
        try:
            while not stop.wait(self.every):
                now = time.time()
                emit(IntervalReport(config.device_id, now - self.every, now, True, fps=10.0))
                self.emitted += 1
            if self.ignore_stop is not None:
                self.ignore_stop.wait(30)
        finally:
            self.returned.append(config.device_id)


async def _wait(
    what: str, check: Callable[[], Awaitable[object] | object], within: float = 10
) -> None:
    deadline = time.monotonic() + within
    seen: object = None
    while time.monotonic() < deadline:
        seen = check()
        if asyncio.iscoroutine(seen):
            seen = await seen
        if seen is True:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: not within {within}s (last seen: {seen!r})")


@asynccontextmanager
async def _running(
    db: str, standin: StandIn, registry: CollectorRegistry, **kw: Any
) -> AsyncIterator[CameraProbes]:
    settings = kw.pop("settings", StreamsSettings(stagger_seconds=0))
    probes = CameraProbes(
        settings,
        lambda: psycopg.AsyncConnection.connect(db, autocommit=True),
        run_camera=standin,
        judge=Judge,
        metrics=ServiceMetrics(registry),
        probe_metrics=None,
        write_seconds=0.2,
        **kw,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(probes.run(stop))
    try:
        yield probes
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def _alive(probes: CameraProbes) -> dict[str, str]:
    return {d: p.config.rtsp_url for d, p in probes.probes.items() if p.thread.is_alive()}


async def _count(conn: psycopg.AsyncConnection, device_id: str) -> int:
    cur = await conn.execute(
        "SELECT count(*) FROM camera_health WHERE device_id = %s", (device_id,)
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def test_threads_follow_the_cameras_table(migrated_db: str) -> None:
    standin = StandIn()
    registry = CollectorRegistry()
    async with await psycopg.AsyncConnection.connect(migrated_db, autocommit=True) as conn:
        await _camera(conn, "cam-1")
        await _camera(conn, "cam-2")
        async with _running(migrated_db, standin, registry, reload_seconds=60) as probes:
            await _wait("two probes", lambda: set(_alive(probes)) == {"cam-1", "cam-2"})
            for device in ("cam-1", "cam-2"):
                await _wait(f"{device} stored", lambda d=device: _count_positive(conn, d))
            assert registry.get_sample_value("pantau_camera_probes") == 2
            # A changed URL (NOTIFY, no 30 s wait): cam-1's thread is replaced.
            await conn.execute(
                "UPDATE cameras SET rtsp_url = 'rtsp://u:p@elsewhere/x', version = version + 1"
                " WHERE device_id = 'cam-1'"
            )
            await _wait(
                "cam-1 restarted",
                lambda: (
                    _alive(probes).get("cam-1") == "rtsp://u:p@elsewhere/x"
                    and standin.returned.count("cam-1") == 1
                ),
            )
            assert (
                registry.get_sample_value(
                    "pantau_camera_probe_restarts_total", {"reason": "changed"}
                )
                == 1
            )
            # Disabled: stopped. A new camera: started.
            await conn.execute("UPDATE cameras SET enabled = false WHERE device_id = 'cam-2'")
            await _camera(conn, "cam-3")
            await _wait(
                "cam-2 stopped, cam-3 started",
                lambda: set(_alive(probes)) == {"cam-1", "cam-3"} and "cam-2" in standin.returned,
            )
            # A device retired in the registry: seen at the next read (any NOTIFY, or the
            # periodic re-read tested below).
            await conn.execute("UPDATE devices SET status = 'retired' WHERE device_id = 'cam-3'")
            await conn.execute("NOTIFY pantau_cameras, 'cam-3'")
            await _wait("cam-3 stopped", lambda: set(_alive(probes)) == {"cam-1"})
            await _wait("gauge", lambda: registry.get_sample_value("pantau_camera_probes") == 1)
            threads = [p.thread for p in probes.probes.values()]
        # Shut down: every thread stopped and joined.
        assert not any(t.is_alive() for t in threads)
        assert sorted(standin.returned) == ["cam-1", "cam-1", "cam-2", "cam-3"]
        assert registry.get_sample_value("pantau_camera_probes") == 0
        states = registry.get_sample_value("pantau_camera_states", {"state": "ok"})
        assert states == 0


async def _count_positive(conn: psycopg.AsyncConnection, device_id: str) -> bool:
    return await _count(conn, device_id) > 0


async def test_first_opens_are_staggered_and_max_cameras_counted(migrated_db: str) -> None:
    standin = StandIn()
    registry = CollectorRegistry()
    settings = StreamsSettings(stagger_seconds=2, max_cameras=4)
    async with await psycopg.AsyncConnection.connect(migrated_db, autocommit=True) as conn:
        for i in range(5):
            await _camera(conn, f"cam-{i}")
        async with _running(migrated_db, standin, registry, settings=settings) as probes:
            await _wait("four probes", lambda: len(_alive(probes)) == 4)
            delays = sorted(delay for _, _, delay in standin.starts)
            assert delays == [0.0, 0.5, 1.0, 1.5]
            assert registry.get_sample_value("pantau_camera_unprobed") == 1


async def test_a_probe_that_died_is_started_again_at_the_periodic_re_read(
    migrated_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    standin = StandIn(fail_first={"cam-1"})
    registry = CollectorRegistry()
    async with await psycopg.AsyncConnection.connect(migrated_db, autocommit=True) as conn:
        await _camera(conn, "cam-1")
        async with _running(migrated_db, standin, registry, reload_seconds=0.2) as probes:
            await _wait("restarted", lambda: len(standin.starts) == 2 and "cam-1" in _alive(probes))
            await _wait("stored", lambda: _count_positive(conn, "cam-1"))
    assert registry.get_sample_value("pantau_camera_probe_restarts_total", {"reason": "died"}) == 1
    assert "camera cam-1: probe failed" in caplog.text


async def test_shutdown_has_a_deadline_and_names_what_did_not_stop(
    migrated_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    standin = StandIn(ignore_stop=release)
    registry = CollectorRegistry()
    caplog.set_level(logging.INFO)
    try:
        async with await psycopg.AsyncConnection.connect(migrated_db, autocommit=True) as conn:
            await _camera(conn, "cam-stuck")
            started = time.monotonic()
            async with _running(migrated_db, standin, registry, shutdown_seconds=1.0) as probes:
                await _wait("running", lambda: "cam-stuck" in _alive(probes))
                started = time.monotonic()
            assert time.monotonic() - started < 3
            assert "1 camera probes did not stop within 0.6s: cam-stuck" in caplog.text
            assert registry.get_sample_value("pantau_camera_probes_unstopped_total") == 1
            assert "u:p" not in caplog.text
    finally:
        release.set()


async def test_reports_wait_while_the_database_is_away_and_probes_go_on(migrated_db: str) -> None:
    standin = StandIn(every=0.3)
    registry = CollectorRegistry()
    away = asyncio.Event()

    async def connect() -> psycopg.AsyncConnection:
        if away.is_set():
            raise DatabaseUnavailable("cannot connect to the database: refused (test)")
        return await psycopg.AsyncConnection.connect(migrated_db, autocommit=True)

    probes = CameraProbes(
        StreamsSettings(),
        connect,
        run_camera=standin,
        judge=Judge,
        metrics=ServiceMetrics(registry),
        probe_metrics=None,
        write_seconds=0.2,
    )
    stop = asyncio.Event()
    async with await psycopg.AsyncConnection.connect(migrated_db, autocommit=True) as conn:
        await _camera(conn, "cam-1")
        task = asyncio.create_task(probes.run(stop))
        try:
            await _wait("stored", lambda: _count_positive(conn, "cam-1"))
            away.set()
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            await _wait(
                "a write failed",
                lambda: (registry.get_sample_value("pantau_camera_write_failures_total") or 0) > 0,
            )
            await _wait("reports wait", lambda: probes._pending_count() >= 2)
            away.clear()
            await _wait("written again", lambda: probes._pending_count() == 0, within=15)
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
        assert len(standin.starts) == 1  # the probe ran through it
        assert await _count(conn, "cam-1") == standin.emitted  # nothing lost
    dropped = registry.get_sample_value(
        "pantau_camera_reports_dropped_total", {"reason": "overwritten"}
    )
    assert dropped == 0


def test_the_hand_off_keeps_the_newest_reports_of_a_camera_and_counts_the_rest() -> None:
    registry = CollectorRegistry()
    probes = CameraProbes(
        StreamsSettings(),
        _no_database,
        run_camera=StandIn(),
        judge=Judge,
        metrics=ServiceMetrics(registry),
        probe_metrics=None,
    )
    for i in range(service.PENDING_PER_CAMERA + 3):
        report = IntervalReport("cam-1", i, i + 1, True)
        probes._accept(report, Verdict("ok"), b"jpeg%d" % i)
    probes._accept(IntervalReport("cam-2", 0, 1, True), Verdict("ok"), None)
    batch, jpegs = probes._take()
    ends = [r.ended_at for r, _ in batch if r.device_id == "cam-1"]
    assert ends == [float(i + 1) for i in range(3, service.PENDING_PER_CAMERA + 3)]
    assert len(batch) == service.PENDING_PER_CAMERA + 1
    assert jpegs["cam-1"][1] == b"jpeg%d" % (service.PENDING_PER_CAMERA + 2)
    assert set(jpegs) == {"cam-1"}
    dropped = registry.get_sample_value(
        "pantau_camera_reports_dropped_total", {"reason": "overwritten"}
    )
    assert dropped == 3
    # A batch the database could not take waits again, before what came since, same bound.
    probes._accept(IntervalReport("cam-1", 100, 101, True), Verdict("ok"), None)
    probes._put_back(batch, jpegs)
    again, _ = probes._take()
    ends = [r.ended_at for r, _ in again if r.device_id == "cam-1"]
    assert ends[-1] == 101.0
    assert len(ends) == service.PENDING_PER_CAMERA


async def _no_database() -> psycopg.AsyncConnection:
    raise AssertionError("not used")
