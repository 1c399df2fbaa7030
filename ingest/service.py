"""The ingestion worker: builds the pipeline for each run and runs its two threads (the MQTT
network thread and the writer) under the supervisor."""

from __future__ import annotations

import asyncio
import logging
import threading

from ingest import quarantine
from ingest.batch import Processor
from ingest.metrics import IngestMetrics
from ingest.pipeline import Pipeline
from ingest.spool import Spool
from ingest.subscriber import Subscriber
from ingest.writer import Writer
from pantau.context import ServiceContext
from pantau.supervisor import Worker

log = logging.getLogger(__name__)


class IngestService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._settings = ctx.settings
        self._pool = ctx.pool
        self._database = ctx.database
        self._metrics = IngestMetrics.create(ctx.registry)
        self._subscriber: Subscriber | None = None
        ctx.readiness.add("broker", self.check)

    async def check(self) -> str | None:
        sub = self._subscriber
        if sub is None:
            return "ingestion not started"
        return None if sub.connected else f"broker {sub.where}: {sub.reason}"

    def workers(self) -> list[Worker]:
        return [
            Worker("ingest", self.run, needs_database=False),  # spools while it is down
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
        s = self._settings
        processor = Processor.from_settings(
            s.ingest.mappings,
            s.ingest.max_future_seconds,
            s.ingest.max_past_days,
            **quarantine.processor_limits(s.ingest),
        )
        pipeline = Pipeline(
            s.ingest,
            processor,
            Writer(
                s.database.url,
                connect_timeout=max(2, int(s.database.connect_timeout_seconds)),
                policy=quarantine.Policy.from_settings(s.ingest),
                schema_ready=self._database.schema_ready,
            ),
            Spool(s.ingest.spool_dir, s.ingest.spool_max_bytes),
            self._metrics,
            max_pending=2 * s.mqtt.receive_maximum,
        )
        subscriber = Subscriber(
            s.mqtt,
            processor.router.filters(s.mqtt.shared_group),
            pipeline.on_message,
            self._metrics,
        )
        pipeline.ack = subscriber.ack
        return pipeline, subscriber

    async def run(self, stop: asyncio.Event) -> None:
        pipeline, subscriber = self.build()
        self._subscriber = subscriber
        network_stop = threading.Event()
        writing = asyncio.ensure_future(asyncio.to_thread(pipeline.run))
        receiving = asyncio.ensure_future(asyncio.to_thread(subscriber.run, network_stop))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({writing, receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            # Drain: the writer commits what was received and releases its acks while the
            # network thread is still connected to send them; then disconnect.
            pipeline.stop()
            await asyncio.wait({writing})
            network_stop.set()
            await asyncio.wait({receiving})
        for task in (writing, receiving):
            task.result()  # a thread's exception fails the worker: the supervisor restarts it
