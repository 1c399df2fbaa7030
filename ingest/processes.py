"""Ingestion on every core: `ingest.processes` ingest processes on one MQTT shared subscription.

One Python process parses MQTT at about one core (the GIL). With `ingest.processes` = N > 1 the
service's ingest worker starts N child processes instead of its in-process pipeline. Child i is an
ordinary ingest pipeline (ingest/service.py's `build` and `drive`) with

- its own persistent MQTT session: client id `<mqtt.client_id>-<i>`, the same at every start, on
  `$share/<mqtt.shared_group or "pantau">/<filter>`, so the broker splits the stream between them;
- its own writer (its database connection) and its own spool, `<ingest.spool_dir>/<i>`.

The parent supervises them: a child that dies (crash, OOM, kill -9) is started again with the
service's backoff and counted in `pantau_ingest_process_restarts_total`; what it had received but
not acknowledged is redelivered by the broker to its session (or, past the broker's patience, to a
sibling), and what it had acknowledged was already committed or in its spool, which the restarted
child replays. On shutdown the parent sends each child SIGTERM; children drain exactly as the
in-process worker does, against `service.shutdown_timeout_seconds`, and are killed past it.
A child whose parent is gone (the pipe to it closes) drains and exits too.

Changing N (or `mqtt.client_id`) and restarting loses nothing (ingest/layout.py): before the
children start, the parent moves the segments of every spool the new layout does not use into a
surviving spool (replayed there like any spool after a database outage) and records the layout in
`<spool_dir>/layout.json`; child 0 then drains each retired session into its own pipeline and ends
it at the broker (ingest/retire.py), once its own subscription is in place. With N = 1 the
service's pipeline does both.

Metrics: each child reports its registry to the parent over its pipe once a second, with its
connection and pipeline state; the parent exports the latest report of every child with a
`process` label (a restarted child's counters start again at 0, which Prometheus' rate() reads as
the reset it is). Chosen over prometheus_client's multiprocess mode, which needs an environment
variable set before the library is first imported in every process, a shared directory of mmap
files to clean at each start, and changes how every gauge of the service aggregates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from ingest import layout
from pantau.settings import Settings
from pantau.supervisor import Backoff, Worker

log = logging.getLogger(__name__)

DEFAULT_GROUP = layout.DEFAULT_GROUP
REPORT_SECONDS = 1.0


def child_settings(settings: Settings, index: int) -> Settings:
    """Child `index`'s settings: its own client id and spool, the shared subscription."""
    mqtt = settings.mqtt.model_copy(
        update={
            "client_id": f"{settings.mqtt.client_id}-{index}",
            "shared_group": settings.mqtt.shared_group or DEFAULT_GROUP,
        }
    )
    ingest = settings.ingest.model_copy(
        update={"spool_dir": settings.ingest.spool_dir / str(index), "processes": 1}
    )
    return settings.model_copy(update={"mqtt": mqtt, "ingest": ingest})


@dataclass
class Report:
    """What a child tells its parent once a second."""

    families: list[Metric]
    connected: bool
    broker_problem: str | None
    pipeline_problem: str | None


@dataclass
class _Child:
    index: int
    process: SpawnProcess | None = None
    conn: Connection | None = None
    report: Report | None = None
    started: float = 0.0


@dataclass
class IngestProcesses:
    """The parent side: the `ingest` worker that keeps N ingest processes running."""

    settings: Settings
    registry: CollectorRegistry
    schema_ready: Callable[[], bool]
    count: int
    adopted: Counter
    children: list[_Child] = field(init=False)

    def __post_init__(self) -> None:
        self.children = [_Child(i) for i in range(self.count)]
        self._context = multiprocessing.get_context("spawn")  # no fork of a threaded process
        self._schema = self._context.Event()
        self._restarts = Counter(
            "pantau_ingest_process_restarts",
            "Ingest processes started again after one died or failed, by process index",
            ["process"],
            registry=self.registry,
        )
        self._up = Gauge(
            "pantau_ingest_process_up",
            "1 while an ingest process is running, by process index",
            ["process"],
            registry=self.registry,
        )
        for child in self.children:
            self._restarts.labels(str(child.index))
            self._up.labels(str(child.index)).set(0)
        self.registry.register(_ChildCollector(self.children))

    # --- readiness --------------------------------------------------------------------------

    async def check_broker(self) -> str | None:
        for child in self.children:
            report = child.report
            if report is None:
                return f"ingest process {child.index} not started"
            if not report.connected:
                return f"ingest process {child.index}: {report.broker_problem}"
        return None

    async def check_pipeline(self) -> str | None:
        for child in self.children:
            report = child.report
            if report is None:
                return f"ingest process {child.index} not started"
            if report.pipeline_problem:
                return f"ingest process {child.index}: {report.pipeline_problem}"
        return None

    # --- supervision --------------------------------------------------------------------------

    def worker(self) -> Worker:
        return Worker("ingest", self.run, needs_database=False)  # the children spool meanwhile

    async def run(self, stop: asyncio.Event) -> None:
        from ingest.service import adopt

        await adopt(self.settings, self.adopted)  # before any child opens its spool
        async with asyncio.TaskGroup() as group:
            for child in self.children:
                group.create_task(self._keep(child, stop), name=f"ingest-process-{child.index}")

    async def _keep(self, child: _Child, stop: asyncio.Event) -> None:
        s = self.settings.service
        backoff = Backoff(s.restart_backoff_initial_seconds, s.restart_backoff_max_seconds)
        loop = asyncio.get_running_loop()
        failures = 0
        label = str(child.index)
        while not stop.is_set():
            self._start(child)
            self._up.labels(label).set(1)
            try:
                await self._watch(child, stop)
            finally:
                # On shutdown, and also when this task is cancelled (the worker failed and is
                # restarted): no child may outlive it and fight its successor for the session.
                await self._stop(child)
                self._up.labels(label).set(0)
                self._close(child)
            if stop.is_set():
                return
            healthy = loop.time() - child.started >= backoff.healthy_after
            failures = 1 if healthy else failures + 1
            delay = backoff.delay(failures - 1)
            log.warning("ingest process %d ended; starting it again in %.1fs", child.index, delay)
            self._restarts.labels(label).inc()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()

    def _start(self, child: _Child) -> None:
        parent, theirs = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=child_main,
            args=(self.settings, child.index, theirs, self._schema),
            name=f"pantau-ingest-{child.index}",
            daemon=False,
        )
        process.start()
        theirs.close()  # the child's end: once the child is gone, recv() sees EOF
        child.process, child.conn = process, parent
        child.started = asyncio.get_running_loop().time()
        log.info("ingest process %d started (pid %s)", child.index, process.pid)

    async def _watch(self, child: _Child, stop: asyncio.Event) -> None:
        """Until the child ends or `stop`: take its reports, tell it when the schema is ready."""
        process, conn = child.process, child.conn
        if process is None or conn is None:
            return
        while not stop.is_set():
            if self.schema_ready():
                self._schema.set()
            else:
                self._schema.clear()
            try:
                while conn.poll():
                    child.report = conn.recv()
            except (EOFError, OSError):
                pass
            if not process.is_alive():
                log.error(
                    "ingest process %d (pid %s) exited with %s",
                    child.index,
                    process.pid,
                    process.exitcode,
                )
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.25):
                    await stop.wait()

    async def _stop(self, child: _Child) -> None:
        """SIGTERM: the child drains within the shutdown deadline; past it, SIGKILL."""
        process = child.process
        if process is None or not process.is_alive():
            return
        process.terminate()
        wait = self.settings.service.shutdown_timeout_seconds * 0.95
        try:
            await asyncio.get_running_loop().run_in_executor(None, process.join, wait)
        finally:  # cancelled by the supervisor too: no child outlives the service
            if process.is_alive():
                log.error("ingest process %d did not stop in %.1fs; killing it", child.index, wait)
                process.kill()
                process.join(5.0)

    def _close(self, child: _Child) -> None:
        if child.conn is not None:
            child.conn.close()
        if child.process is not None and not child.process.is_alive():
            child.process.close()
        child.conn = None
        child.process = None
        child.report = None  # not ready, no series, until the next one reports


class _ChildCollector(Collector):
    """The children's latest reports, each series labelled with its `process`."""

    def __init__(self, children: list[_Child]) -> None:
        self._children = children

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        for child in self._children:
            report = child.report
            if report is None:
                continue
            label = str(child.index)
            for family in report.families:
                out = merged.get(family.name)
                if out is None:
                    out = Metric(family.name, family.documentation, family.type, family.unit)
                    merged[family.name] = out
                for sample in family.samples:
                    out.samples.append(
                        Sample(
                            sample.name,
                            {**sample.labels, "process": label},
                            sample.value,
                            sample.timestamp,
                            sample.exemplar,
                        )
                    )
        return list(merged.values())

    def describe(self) -> Iterable[Metric]:
        return []  # what the children report is not known before they run


# --- the child ---------------------------------------------------------------------------------


def child_main(settings: Settings, index: int, conn: Connection, schema: ProcessEvent) -> None:
    """Entry point of ingest process `index` (a spawned interpreter)."""
    from pantau import logs

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C: the parent decides
    logs.configure(settings.log.level, settings.log.format)
    try:
        asyncio.run(_child(child_settings(settings, index), index, conn, schema, settings))
    finally:
        conn.close()


async def _child(
    settings: Settings, index: int, conn: Connection, schema: ProcessEvent, base: Settings
) -> None:
    from ingest import retire
    from ingest.metrics import IngestMetrics
    from ingest.service import build, drive

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    registry = CollectorRegistry()
    metrics = IngestMetrics.create(registry)
    pipeline, subscriber = build(settings, metrics, schema.is_set)
    drains: list[retire.Drain] = []
    if index == 0:  # process 0 drains the retired sessions: one writer of the layout record
        record = layout.Record(base.ingest.spool_dir)
        drains = retire.drains(record, base.mqtt, pipeline, subscriber, metrics)
    log.info(
        "ingest process %d (pid %d): client id %s, spool %s",
        index,
        os.getpid(),
        settings.mqtt.client_id,
        Path(settings.ingest.spool_dir),
    )

    def report() -> Report:
        return Report(
            list(registry.collect()),
            subscriber.connected,
            f"broker {subscriber.where}: {subscriber.reason}",
            pipeline.spool_problem or pipeline.database_problem,
        )

    done = threading.Event()

    def reporter() -> None:
        """Report once a second; a closed pipe means the parent is gone: drain and exit."""
        while not done.wait(REPORT_SECONDS):
            try:
                conn.send(report())
            except (OSError, ValueError):
                loop.call_soon_threadsafe(stop.set)
                return

    thread = threading.Thread(target=reporter, name="ingest-report", daemon=True)
    thread.start()
    try:
        # Inside the parent's wait for us (and the supervisor's deadline around it).
        deadline = settings.service.shutdown_timeout_seconds * 0.85
        await drive(pipeline, subscriber, deadline, stop, drains)
    finally:
        done.set()
        with contextlib.suppress(OSError, ValueError):
            conn.send(report())
