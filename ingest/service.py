"""The ingestion worker: builds the pipeline for each run and runs its two threads (the MQTT
network thread and the writer) under the supervisor.

Shutdown always ends: the writer drains against a deadline a little inside the supervisor's
(`service.shutdown_timeout_seconds`), then the network thread sends the acknowledgements released
so far and disconnects, whatever the writer is stuck in. A batch not committed by then is never
acknowledged (the broker redelivers it); the threads are daemons, so a write blocked on a hung
database does not keep the process alive either.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from prometheus_client import Counter

from ingest import layout, quarantine, retire
from ingest.batch import Processor
from ingest.metrics import IngestMetrics
from ingest.pipeline import Pipeline
from ingest.processes import IngestProcesses
from ingest.spool import Spool
from ingest.subscriber import Subscriber
from ingest.writer import Writer
from pantau.context import ServiceContext
from pantau.settings import Settings
from pantau.supervisor import Worker

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)


class IngestService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._settings = ctx.settings
        self._pool = ctx.pool
        self._database = ctx.database
        self._subscriber: Subscriber | None = None
        self._pipeline: Pipeline | None = None
        self._processes: IngestProcesses | None = None
        self._adopted = adoption_counter(ctx.registry)
        count = ctx.settings.ingest.processes
        if count > 1:  # the pipelines run in processes of their own, which report their metrics
            self._processes = IngestProcesses(
                ctx.settings, ctx.registry, ctx.database.schema_ready, count, self._adopted
            )
            ctx.readiness.add("broker", self._processes.check_broker)
            ctx.readiness.add("ingest", self._processes.check_pipeline)
            return
        self._metrics = IngestMetrics.create(ctx.registry)
        ctx.readiness.add("broker", self.check)
        ctx.readiness.add("ingest", self.check_pipeline)

    async def check(self) -> str | None:
        sub = self._subscriber
        if sub is None:
            return "ingestion not started"
        return None if sub.connected else f"broker {sub.where}: {sub.reason}"

    async def check_pipeline(self) -> str | None:
        """Why the pipeline cannot take messages as usual: its spool is full (size limit or
        disk), or the database refuses its writes, and why."""
        pipeline = self._pipeline
        if pipeline is None:
            return "ingestion not started"
        return pipeline.spool_problem or pipeline.database_problem

    def workers(self) -> list[Worker]:
        ingest = (
            self._processes.worker()
            if self._processes is not None
            else Worker("ingest", self.run, needs_database=False)  # spools while it is down
        )
        return [
            ingest,
            Worker("ingest-housekeeping", self.housekeeping),
        ]

    async def housekeeping(self, stop: asyncio.Event) -> None:
        """Hourly: quarantined payloads past their retention are deleted."""
        days = self._settings.ingest.quarantine_retention_days
        while not stop.is_set():
            async with self._pool.connection() as conn:
                purged = await quarantine.purge(conn, days)
            if purged:
                log.info("deleted %d quarantined payloads older than %d days", purged, days)
            try:
                async with asyncio.timeout(3600):
                    await stop.wait()
            except TimeoutError:
                pass

    def build(self) -> tuple[Pipeline, Subscriber]:
        return build(self._settings, self._metrics, self._database.schema_ready)

    async def run(self, stop: asyncio.Event) -> None:
        await adopt(self._settings, self._adopted)
        pipeline, subscriber = self.build()
        self._pipeline, self._subscriber = pipeline, subscriber
        record = layout.Record(self._settings.ingest.spool_dir)
        drains = retire.drains(record, self._settings.mqtt, pipeline, subscriber, self._metrics)
        deadline = self._settings.service.shutdown_timeout_seconds
        await drive(pipeline, subscriber, deadline, stop, drains)


def adoption_counter(registry: CollectorRegistry) -> Counter:
    return Counter(
        "pantau_ingest_spool_adopted_bytes",
        "Bytes of spool segments an earlier ingest.processes layout left, moved at start into "
        "a spool of this layout to be replayed (ingest/layout.py)",
        registry=registry,
    )


async def adopt(settings: Settings, adopted: Counter) -> None:
    """Before any pipeline opens its spool: take over the spools of an earlier layout and
    record this one (ingest/layout.py)."""
    prepared = await asyncio.to_thread(layout.prepare, settings)
    adopted.inc(prepared.adopted_bytes)


def build(
    s: Settings, metrics: IngestMetrics, schema_ready: Callable[[], bool]
) -> tuple[Pipeline, Subscriber]:
    """One ingest pipeline and its subscriber (in the service's process, or in an ingest
    process of its own: see ingest/processes.py)."""
    pipeline, processor = build_pipeline(s, metrics, schema_ready)
    subscriber = Subscriber(
        s.mqtt,
        processor.router.filters(s.mqtt.shared_group),
        pipeline.on_message,
        metrics,
    )
    pipeline.ack = subscriber.ack
    return pipeline, subscriber


def build_pipeline(
    s: Settings, metrics: IngestMetrics, schema_ready: Callable[[], bool]
) -> tuple[Pipeline, Processor]:
    """The pipeline alone (no acknowledgements until `ack` is set), on `s.ingest.spool_dir`."""
    processor = Processor.from_settings(
        s.ingest.mappings,
        s.ingest.max_future_seconds,
        s.ingest.max_past_days,
        **quarantine.processor_limits(s.ingest),
    )
    pipeline = Pipeline(
        s.ingest,
        processor,
        Writer.from_settings(s, schema_ready=schema_ready),
        Spool(s.ingest.spool_dir, s.ingest.spool_max_bytes),
        metrics,
        max_pending=2 * s.mqtt.receive_maximum,
    )
    return pipeline, processor


async def drive(
    pipeline: Pipeline,
    subscriber: Subscriber,
    deadline: float,
    stop: asyncio.Event,
    drains: Sequence[retire.Drain] = (),
) -> None:
    """Run the pipeline's writer and the subscriber's network thread until `stop` is set (or one
    of them fails), then drain within `deadline` seconds. `drains` (retired sessions feeding the
    same pipeline) run beside them and end with the network thread."""
    network_stop = threading.Event()
    writing = _daemon(pipeline.run, "ingest-writer")
    receiving = _daemon(lambda: subscriber.run(network_stop), "ingest-mqtt")
    retiring = [
        _daemon(functools.partial(d.run, network_stop, subscriber.subscribed), f"ingest-retire-{i}")
        for i, d in enumerate(drains)
    ]
    stopping: asyncio.Future[None] = asyncio.ensure_future(_wait(stop))
    # Inside the supervisor's deadline, so that the network thread still stops cleanly.
    drain = max(deadline - 1.0, deadline * 0.7)
    try:
        await asyncio.wait({writing, receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        # Drain: the writer commits what was received and releases its acks while the
        # network thread is still connected to send them; then disconnect.
        pipeline.stop()
        try:
            # Without a shutdown (a thread failed: the supervisor restarts us) the writer
            # must be done before a new one opens the same spool.
            await asyncio.wait({writing}, timeout=drain if stop.is_set() else None)
        finally:
            if not writing.done():
                log.error(
                    "ingest writer still busy after %.1fs (a write the database does not "
                    "answer?); leaving its batch unacknowledged for the broker to redeliver",
                    drain,
                )
            network_stop.set()
        await asyncio.wait({receiving, *retiring}, timeout=max(1.0, deadline - drain))
        if not receiving.done():
            log.error("MQTT network thread did not stop; leaving it")
        if not all(task.done() for task in retiring):
            log.error("a retired session's drain did not stop; leaving it")
    for task in (writing, receiving):
        if task.done():
            task.result()  # a thread's exception fails the worker: the supervisor restarts it


async def _wait(event: asyncio.Event) -> None:
    await event.wait()


def _daemon(target: Callable[[], None], name: str) -> asyncio.Future[None]:
    """Run `target` in a daemon thread; the future resolves when it returns. (Not
    `asyncio.to_thread`: the default executor's threads are joined at exit, so a thread stuck in
    a socket would keep the process from ever ending.)"""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    def settle(exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is None:
            future.set_result(None)
        else:
            future.set_exception(exc)

    def main() -> None:
        error: BaseException | None = None
        try:
            target()
        except BaseException as exc:  # handed to the awaiting task
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=main, name=name, daemon=True).start()
    return future
