"""The camera probes' worker ("camera-probes"): keeps one probe thread per camera the registry
says to probe, judges what each reports and writes the results.

- **Which cameras**: `store.load_cameras` at start, on every NOTIFY on `pantau_cameras` (a row
  of `cameras` changed) and every `RELOAD_SECONDS` (a device's status or type changed, which
  does not notify). With a holder id (`pantau run`: the instance's `mqtt.client_id`), only the
  cameras this instance holds a lease on (streams/leases.py), refreshed every
  `lease_seconds / 3`; leases not renewed for `lease_seconds` (the database away) stop their
  probes, since another instance may have taken them; they are released at shutdown.
  A camera whose config changed (URL, interval, thresholds, version) gets a
  new thread, one that is no longer listed is stopped, one whose thread died is started again.
  New threads open their first connection spread over `stagger_seconds`; every open waits for
  one of `open_concurrency` slots (a shared semaphore).
- **Hand-off**: a probe thread judges its own reports (one `Judge` per camera, off the event
  loop; the verdict goes back to the probe, whose next interval's sampling it sets) and hands
  them to the loop (`call_soon_threadsafe`). Bounded: at most
  `PENDING_PER_CAMERA` reports per camera wait for the writer, the oldest is overwritten when it
  falls behind (counted in pantau_camera_reports_dropped_total{reason="overwritten"}); only the
  newest snapshot JPEG per camera is kept.
- **Writer**: every `WRITE_SECONDS` the waiting reports are written in one transaction
  (`store.write_batch`), then the snapshots saved. While the database is down the reports wait
  (bounded as above) and the probes keep running.
- **Shutdown** against a deadline: every thread's stop event set, joined until the deadline,
  the device ids of those still running logged, what they reported written last.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pantau.errors import DatabaseUnavailable
from streams import leases, store
from streams.report import CameraConfig, IntervalReport, Thresholds, Verdict
from streams.settings import StreamsSettings
from streams.urls import redact

log = logging.getLogger(__name__)

CHANNEL = "pantau_cameras"  # NOTIFY from the cameras table's trigger
RELOAD_SECONDS = 30.0  # the registry is read again this often without a NOTIFY
WRITE_SECONDS = 1.0  # a batch of reports is written this often
PENDING_PER_CAMERA = 8  # reports of one camera waiting for the writer, at most
RETENTION_EVERY_SECONDS = 3600.0  # old camera_health rows are deleted this often
STATES = ("unknown", "ok", "frozen", "black", "covered", "blurred", "offline")
_DB_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, DatabaseUnavailable)

Emit = Callable[[IntervalReport], Verdict | None]  # the verdict: see streams.probe.Emit
Connect = Callable[[], Awaitable[psycopg.AsyncConnection]]


class RunCamera(Protocol):
    """streams.probe.run_camera: probes one camera in the calling thread until `stop` is set."""

    def __call__(
        self,
        config: CameraConfig,
        settings: StreamsSettings,
        emit: Emit,
        stop: threading.Event,
        open_gate: threading.Semaphore,
        metrics: Any,
        first_delay: float = 0.0,
    ) -> None: ...


class Judging(Protocol):
    def judge(self, report: IntervalReport) -> Verdict: ...


class SnapshotSaver(Protocol):
    async def save(
        self, conn: psycopg.AsyncConnection, device_id: str, taken_at: datetime, jpeg: bytes
    ) -> None: ...


class ServiceMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.probes = Gauge(
            "pantau_camera_probes", "Camera probe threads running", registry=registry
        )
        self.unprobed = Gauge(
            "pantau_camera_unprobed",
            "Enabled cameras not probed by this instance: past streams.max_cameras",
            registry=registry,
        )
        self.states = Gauge(
            "pantau_camera_states",
            "Probed cameras by the state of their last check (unknown: not judged yet)",
            ["state"],
            registry=registry,
        )
        self.pending = Gauge(
            "pantau_camera_reports_pending",
            f"Check reports waiting for the writer (at most {PENDING_PER_CAMERA} per camera)",
            registry=registry,
        )
        self.written = Counter(
            "pantau_camera_reports_written_total",
            "Check reports written (camera_health, readings, status)",
            registry=registry,
        )
        self.dropped = Counter(
            "pantau_camera_reports_dropped_total",
            "Check reports not written. overwritten: a newer one of the camera took its place "
            "while the writer fell behind; refused: the database refused the batch; judge_error: "
            "the judge failed on it; shutdown: still waiting when the service stopped",
            ["reason"],
            registry=registry,
        )
        self.write_seconds = Histogram(
            "pantau_camera_write_seconds",
            "Writing one batch of check reports (one transaction)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry,
        )
        self.write_failures = Counter(
            "pantau_camera_write_failures_total",
            "Batches of check reports not written now (the database was down: kept to retry)",
            registry=registry,
        )
        self.restarts = Counter(
            "pantau_camera_probe_restarts_total",
            "Probe threads started again: changed: the camera's config changed; died: the "
            "thread had ended",
            ["reason"],
            registry=registry,
        )
        self.unstopped = Counter(
            "pantau_camera_probes_unstopped_total",
            "Probe threads still running at the shutdown deadline",
            registry=registry,
        )
        self.snapshot_failures = Counter(
            "pantau_camera_snapshot_failures_total",
            "Snapshots that could not be saved",
            registry=registry,
        )
        self.leases = Gauge(
            "pantau_camera_leases",
            "Cameras this instance holds a lease on (streams.lease_seconds)",
            registry=registry,
        )
        self.lease_instances = Gauge(
            "pantau_camera_lease_instances",
            "Live instances sharing the cameras, this one included (as of its last refresh)",
            registry=registry,
        )
        for reason in ("overwritten", "refused", "judge_error", "shutdown"):
            self.dropped.labels(reason)
        for reason in ("changed", "died"):
            self.restarts.labels(reason)
        for state in STATES:
            self.states.labels(state)


@dataclasses.dataclass
class _Probe:
    config: CameraConfig
    stop: threading.Event
    thread: threading.Thread = dataclasses.field(init=False)
    retired: bool = False  # replaced or removed: what it still reports is not wanted


class CameraProbes:
    """The worker's state: probe threads, reports waiting, the writer."""

    def __init__(
        self,
        settings: StreamsSettings,
        connect: Connect,
        *,
        run_camera: RunCamera,
        judge: Callable[[Thresholds], Judging],
        metrics: ServiceMetrics,
        probe_metrics: Any,
        snapshots: SnapshotSaver | None = None,
        shutdown_seconds: float = 10.0,
        reload_seconds: float = RELOAD_SECONDS,
        write_seconds: float = WRITE_SECONDS,
        holder: str | None = None,
    ) -> None:
        self.settings = settings
        self._connect = connect
        self._run_camera = run_camera
        self._judge = judge
        self.metrics = metrics
        self._probe_metrics = probe_metrics
        self._snapshots = snapshots
        self._shutdown_seconds = shutdown_seconds
        self._reload_seconds = reload_seconds
        self._write_seconds = write_seconds
        self._gate = threading.Semaphore(settings.open_concurrency)
        self.probes: dict[str, _Probe] = {}
        self._pending: dict[str, deque[tuple[IntervalReport, Verdict]]] = {}
        self._jpegs: dict[str, tuple[datetime, bytes]] = {}
        self._states: dict[str, str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_retention = 0.0
        self._unprobed = 0
        self._reported_up: dict[str, str] = {}  # see store.write_batch
        self.holder = holder  # None: every camera of the registry, no leases
        self._leased_until = 0.0  # monotonic: the leases held are ours until then

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set; then the threads are stopped and what they reported written."""
        self._loop = asyncio.get_running_loop()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._watch(stop))
                group.create_task(self._write_loop(stop))
        finally:
            await self._shutdown()

    # --- which cameras ---------------------------------------------------------------------

    async def _watch(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                async with await self._connect() as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    while not stop.is_set():
                        self.apply(await self._load(conn))
                        failures = 0
                        await _wait_for_news(conn, stop, self._wait_seconds())
            except _DB_ERRORS as exc:
                failures += 1
                if self.holder is not None and time.monotonic() >= self._leased_until:
                    if self.probes:
                        log.warning(
                            "camera probes: leases not renewed for %gs (%s): %d probes stopped, "
                            "another instance may hold their cameras now",
                            self.settings.lease_seconds,
                            _one_line(exc),
                            len(self.probes),
                        )
                    self.apply(store.Loaded([], 0))
                    self.metrics.leases.set(0)
                else:
                    log.warning(
                        "camera probes: cannot read the cameras (%s); the probes running go on",
                        _one_line(exc),
                    )
                await _sleep(stop, min(_backoff(failures), self._wait_seconds()))

    async def _load(self, conn: psycopg.AsyncConnection) -> store.Loaded:
        if self.holder is None:
            return await store.load_cameras(conn, self.settings)
        started = time.monotonic()
        share = await leases.refresh(
            conn, self.holder, self.settings.lease_seconds, self.settings.max_cameras
        )
        self._leased_until = started + self.settings.lease_seconds
        self.metrics.leases.set(len(share.held))
        self.metrics.lease_instances.set(share.instances)
        loaded = await store.load_cameras(conn, self.settings, only=share.held)
        return store.Loaded(loaded.cameras, share.unprobed)

    def _wait_seconds(self) -> float:
        if self.holder is None:
            return self._reload_seconds
        return min(self._reload_seconds, self.settings.lease_seconds / 3)

    def apply(self, loaded: store.Loaded) -> None:
        """Start, stop and restart probe threads so that one runs per camera of `loaded`."""
        wanted = {c.device_id: c for c in loaded.cameras}
        for device_id in [d for d in self.probes if d not in wanted]:
            self._retire(device_id)
            log.info("camera %s: no longer probed", device_id)
        starts: list[tuple[CameraConfig, str | None]] = []
        for config in loaded.cameras:
            probe = self.probes.get(config.device_id)
            if probe is None:
                starts.append((config, None))
            elif probe.config != config:
                self._retire(config.device_id)
                starts.append((config, "changed"))
            elif not probe.thread.is_alive():
                starts.append((config, "died"))
        for i, (config, why) in enumerate(starts):
            # A batch of new threads spreads its first opens over stagger_seconds.
            delay = self.settings.stagger_seconds * i / len(starts) if len(starts) > 1 else 0.0
            self._start(config, delay)
            if why is not None:
                self.metrics.restarts.labels(why).inc()
            log.info(
                "camera %s: probing %s every %gs%s",
                config.device_id,
                redact(config.rtsp_url),
                config.probe_interval_seconds,
                f" (started again: {why})" if why else "",
            )
        if loaded.unprobed and loaded.unprobed != self._unprobed:
            log.warning(
                "%d enabled cameras are not probed: past streams.max_cameras (%d)",
                loaded.unprobed,
                self.settings.max_cameras,
            )
        self._unprobed = loaded.unprobed
        self.metrics.unprobed.set(loaded.unprobed)
        self._update_gauges()

    def _start(self, config: CameraConfig, delay: float) -> None:
        probe = _Probe(config, threading.Event())
        probe.thread = threading.Thread(
            target=self._probe_thread,
            args=(probe, delay),
            name=f"probe:{config.device_id}",
            daemon=True,  # one stuck in FFmpeg past the shutdown deadline must not hold the exit
        )
        self.probes[config.device_id] = probe
        self._states.setdefault(config.device_id, "unknown")
        probe.thread.start()

    def _retire(self, device_id: str) -> None:
        probe = self.probes.pop(device_id)
        probe.retired = True
        probe.stop.set()
        self._states.pop(device_id, None)

    def _probe_thread(self, probe: _Probe, delay: float) -> None:
        judge = self._judge(probe.config.thresholds)
        emit = self._emitter(probe, judge)
        try:
            self._run_camera(
                probe.config,
                self.settings,
                emit,
                probe.stop,
                self._gate,
                self._probe_metrics,
                first_delay=delay,
            )
        except Exception:
            log.exception("camera %s: probe failed", probe.config.device_id)

    def _emitter(self, probe: _Probe, judge: Judging) -> Emit:
        device_id = probe.config.device_id

        def emit(report: IntervalReport) -> Verdict | None:
            if probe.retired:
                return None
            try:
                verdict = judge.judge(report)
            except Exception:
                log.exception("camera %s: judging a report failed", device_id)
                self.metrics.dropped.labels("judge_error").inc()
                return None
            jpeg = report.jpeg
            slim = dataclasses.replace(report, samples=(), jpeg=None)  # frames stay here
            loop = self._loop
            try:
                if loop is None:
                    raise RuntimeError("no event loop")
                loop.call_soon_threadsafe(self._accept, slim, verdict, jpeg)
            except RuntimeError:  # the loop is closed: the service has stopped
                self.metrics.dropped.labels("shutdown").inc()
            return verdict

        return emit

    # --- the hand-off, on the event loop ----------------------------------------------------

    def _accept(self, report: IntervalReport, verdict: Verdict, jpeg: bytes | None) -> None:
        waiting = self._pending.setdefault(report.device_id, deque())
        if len(waiting) >= PENDING_PER_CAMERA:
            waiting.popleft()
            self.metrics.dropped.labels("overwritten").inc()
        waiting.append((report, verdict))
        if jpeg:
            self._jpegs[report.device_id] = (_time(report.ended_at), jpeg)
        if report.device_id in self.probes:
            self._states[report.device_id] = verdict.state

    def _take(
        self,
    ) -> tuple[list[tuple[IntervalReport, Verdict]], dict[str, tuple[datetime, bytes]]]:
        batch = [item for waiting in self._pending.values() for item in waiting]
        jpegs = self._jpegs
        self._pending, self._jpegs = {}, {}
        return batch, jpegs

    def _put_back(
        self,
        batch: Iterable[tuple[IntervalReport, Verdict]],
        jpegs: dict[str, tuple[datetime, bytes]],
    ) -> None:
        """A batch not written waits again, before what arrived since (bounded the same way)."""
        newer, self._pending = self._pending, {}
        for report, verdict in batch:
            self._accept(report, verdict, None)
        for waiting in newer.values():
            for report, verdict in waiting:
                self._accept(report, verdict, None)
        for device_id, picture in jpegs.items():
            self._jpegs.setdefault(device_id, picture)

    # --- the writer -------------------------------------------------------------------------

    async def _write_loop(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                async with await self._connect() as conn:
                    while not stop.is_set():
                        await _sleep(stop, self._write_seconds)
                        await self._flush(conn)
                        failures = 0
                        await self._retention(conn)
            except _DB_ERRORS as exc:
                failures += 1
                self.metrics.write_failures.inc()
                log.warning(
                    "camera probes: cannot write reports (%s); %d waiting",
                    _one_line(exc),
                    self._pending_count(),
                )
                await _sleep(stop, _backoff(failures))

    async def _flush(self, conn: psycopg.AsyncConnection) -> None:
        batch, jpegs = self._take()
        if batch:
            started = time.perf_counter()
            try:
                written = await store.write_batch(conn, batch, self._reported_up)
            except _DB_ERRORS:
                self._put_back(batch, jpegs)
                raise
            except psycopg.Error as exc:  # refused (a bug or a schema out of step): not retried
                log.error("camera reports refused by the database: %s", _one_line(exc))
                self.metrics.dropped.labels("refused").inc(len(batch))
                written = None
            self.metrics.write_seconds.observe(time.perf_counter() - started)
            if written is not None:
                self.metrics.written.inc(len(batch))
        if self._snapshots is not None:
            for device_id, (taken_at, jpeg) in jpegs.items():
                try:
                    await self._snapshots.save(conn, device_id, taken_at, jpeg)
                except _DB_ERRORS:
                    raise
                except (OSError, ValueError, psycopg.Error) as exc:
                    self.metrics.snapshot_failures.inc()
                    log.warning("camera %s: snapshot not saved: %s", device_id, _one_line(exc))
        self._update_gauges()

    async def _retention(self, conn: psycopg.AsyncConnection) -> None:
        if time.monotonic() - self._last_retention < RETENTION_EVERY_SECONDS:
            return
        self._last_retention = time.monotonic()
        deleted = await store.delete_old_health(conn, self.settings.health_retention_days)
        if deleted:
            log.info(
                "deleted %d camera_health rows older than %d days",
                deleted,
                self.settings.health_retention_days,
            )

    def _pending_count(self) -> int:
        return sum(len(w) for w in self._pending.values())

    def _update_gauges(self) -> None:
        self.metrics.probes.set(sum(1 for p in self.probes.values() if p.thread.is_alive()))
        self.metrics.pending.set(self._pending_count())
        counts = dict.fromkeys(STATES, 0)
        for state in self._states.values():
            counts[state] = counts.get(state, 0) + 1
        for state, count in counts.items():
            self.metrics.states.labels(state).set(count)

    # --- shutdown ---------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        """Stop every thread, join them until the deadline, write what they reported."""
        deadline = time.monotonic() + self._shutdown_seconds * 0.6
        probes = list(self.probes.values())
        for probe in probes:
            probe.stop.set()
        late = await asyncio.to_thread(_join_all, [p.thread for p in probes], deadline)
        if late:
            ids = sorted(p.config.device_id for p in probes if p.thread in late)
            self.metrics.unstopped.inc(len(ids))
            log.warning(
                "%d camera probes did not stop within %.1fs: %s",
                len(ids),
                self._shutdown_seconds * 0.6,
                ", ".join(ids),
            )
        self.probes.clear()
        self._states.clear()
        await asyncio.sleep(0)  # the reports handed over while joining
        waiting = self._pending_count()
        if waiting or self.holder is not None:
            try:
                async with asyncio.timeout(self._shutdown_seconds * 0.3):
                    async with await self._connect() as conn:
                        await self._flush(conn)
                        waiting = 0
                        if self.holder is not None:  # the others take them at once
                            await leases.release(conn, self.holder)
                            self.metrics.leases.set(0)
            except (*_DB_ERRORS, TimeoutError) as exc:
                if waiting:
                    log.warning(
                        "camera probes: %d reports not written at shutdown (%s)", waiting, exc
                    )
                    self.metrics.dropped.labels("shutdown").inc(self._pending_count() or waiting)
                else:
                    log.warning(
                        "camera probes: leases not released at shutdown (%s); they expire in %gs",
                        _one_line(exc),
                        self.settings.lease_seconds,
                    )
        self._update_gauges()


def _join_all(threads: list[threading.Thread], deadline: float) -> set[threading.Thread]:
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return {t for t in threads if t.is_alive()}


async def _wait_for_news(
    conn: psycopg.AsyncConnection, stop: asyncio.Event, seconds: float
) -> None:
    """Until the cameras should be read again: a NOTIFY (and those right behind it, so a bulk
    import reads once), `seconds` passed, or `stop` (checked twice a second)."""
    deadline = time.monotonic() + seconds
    while not stop.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        notified = False
        async for _ in conn.notifies(timeout=min(remaining, 0.5), stop_after=1):
            notified = True
        if notified:
            async for _ in conn.notifies(timeout=0.1, stop_after=10_000):
                pass
            return


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def _backoff(failures: int) -> float:
    return float(min(30.0, 0.5 * 2 ** min(failures, 10)))


def _time(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
