"""The ingestion pipeline: MQTT thread → inbox → writer thread → PostgreSQL or spool → acks.

The subscriber's network thread only appends to the inbox. The writer thread takes batches (by
count, or when the oldest message has waited `batch_max_wait_seconds`), decodes them, commits
them, and only then releases their acknowledgements. While the database is down, batches go to
the spool (fsynced) and are acknowledged; when it returns, the spool is replayed in order before
anything new is written. When the spool is full, nothing more is acknowledged: the broker keeps
the messages (its receive-maximum window stops the flow), and the inbox stays bounded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from ingest.batch import Batch, Message, Processor
from ingest.decoders import UNREGISTERED
from ingest.metrics import IngestMetrics, count_quarantine
from ingest.spool import Spool, SpoolFull
from ingest.writer import DatabaseDown, Writer, WriteResult
from pantau.settings import IngestSettings

log = logging.getLogger(__name__)

_LAG_SAMPLES = 100
AckFn = Callable[[Sequence[tuple[int, int, int]]], None]


class Pipeline:
    def __init__(
        self,
        settings: IngestSettings,
        processor: Processor,
        writer: Writer,
        spool: Spool,
        metrics: IngestMetrics,
        *,
        max_pending: int,
    ) -> None:
        self._settings = settings
        self._processor = processor
        self._writer = writer
        self._spool = spool
        self._metrics = metrics
        self._max_pending = max_pending
        self._filling = Batch()
        self._started: float | None = None  # when the first message of `_filling` came
        self._cond = threading.Condition()
        self._stopping = False
        self._next_db_try = 0.0
        self._registered: frozenset[str] = frozenset()
        self._registry_read = 0.0  # monotonic time of the last registry read
        self._spool_full_since: float | None = None
        self.ack: AckFn = lambda acks: None
        metrics.pending_messages.set_function(lambda: len(self._filling.messages))
        metrics.spool_bytes.set_function(lambda: self._spool.size)
        metrics.spool_oldest_seconds.set_function(self._spool.oldest_age)

    # --- called from the MQTT network thread --------------------------------------------------

    def on_message(self, message: Message) -> None:
        """Decode into the batch being filled (here, so decoding overlaps the writer's wait on
        the database) and wake the writer for a new or a full batch."""
        with self._cond:
            batch = self._filling
            self._processor.add(batch, message)
            if self._started is None:
                self._started = time.monotonic()  # the batch's max-wait clock starts
                self._cond.notify()
            elif len(batch.readings) >= self._settings.batch_size:
                self._cond.notify()
            # A second bound behind the broker's receive maximum (MQTT 3.1.1 has none).
            while len(self._filling.messages) >= self._max_pending and not self._stopping:
                self._cond.wait(1.0)

    # --- the writer thread ----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop taking new batches once what was received is written."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def run(self) -> None:
        self._spool.open()
        try:
            self._database_ready()
            while True:
                batch = self._take()
                if batch is not None:
                    self._deliver(batch)
                elif self._stopping:
                    break
                else:
                    self._database_ready()  # idle: a chance to replay the spool
        finally:
            self._writer.close()
            self._spool.close()
            self._metrics.database_connected.set(0)

    def _take(self) -> Batch | None:
        """The filled batch, once full or `batch_max_wait_seconds` old; None when idle."""
        max_wait = self._settings.batch_max_wait_seconds
        with self._cond:
            while True:
                batch = self._filling
                if batch.messages and (
                    self._stopping or len(batch.readings) >= self._settings.batch_size
                ):
                    break
                if self._started is not None:
                    waited = time.monotonic() - self._started
                    if waited >= max_wait:
                        break
                    self._cond.wait(max_wait - waited)
                elif self._stopping:
                    return None
                else:
                    idle = self._settings.database_retry_seconds
                    if not self._cond.wait(idle if not self._spool.empty else 5.0):
                        return None
            self._filling = Batch()
            self._started = None
            self._cond.notify_all()
        self._metrics.messages_received.inc(len(batch.messages))
        return batch

    def _deliver(self, batch: Batch) -> None:
        if self._settings.unregistered_devices == "quarantine":
            self._hold_strangers(batch)
        if not self._commit(batch):
            self._spool_or_hold(batch)

    def _commit(self, batch: Batch) -> bool:
        """Write and acknowledge the batch if the database is up (spool replayed first)."""
        if not self._database_ready():
            return False
        try:
            result = self._timed_write(batch)
        except DatabaseDown as exc:
            self._database_lost(exc)
            return False
        self._committed(batch, result)
        return True

    def _spool_or_hold(self, batch: Batch) -> None:
        """Spool and acknowledge; when the spool is full, keep the batch unacknowledged until
        the database returns (or we stop: then the broker redelivers it next time)."""
        while True:
            try:
                self._spool.append(batch)
            except SpoolFull as exc:
                if self._spool_full_since is None:
                    self._spool_full_since = time.monotonic()
                    log.error("%s and the database is down: no longer acknowledging", exc)
                with self._cond:
                    if self._stopping:
                        return
                    self._cond.wait(self._settings.database_retry_seconds)
                if self._commit(batch):
                    return
                continue
            self._spool_full_since = None
            self._acknowledge(batch)
            return

    def _database_ready(self) -> bool:
        """Connected (trying again at most every `database_retry_seconds`) and the spool
        replayed; False while the database is down."""
        if not self._writer_up():
            return False
        for segment in self._spool.segments():
            replayed = 0
            try:
                for batch in self._spool.read(segment):
                    result = self._timed_write(batch)
                    self._count(batch, result)
                    replayed += len(batch)
            except DatabaseDown as exc:
                self._database_lost(exc)
                return False
            self._spool.consumed(segment)
            log.info("replayed %d readings from spool %s", replayed, segment.name)
        return True

    def _writer_up(self) -> bool:
        if self._writer.connected:
            return True
        now = time.monotonic()
        if now < self._next_db_try:
            return False
        self._next_db_try = now + self._settings.database_retry_seconds
        try:
            self._writer.connect()
        except DatabaseDown as exc:
            log.warning("database still down: %s", exc)
            return False
        log.info("ingestion writer connected to the database")
        self._metrics.database_connected.set(1)
        return True

    def _database_lost(self, exc: DatabaseDown) -> None:
        log.error("database write failed (%s); spooling to %s", exc, self._spool.directory)
        self._metrics.database_connected.set(0)
        self._next_db_try = time.monotonic() + self._settings.database_retry_seconds

    def _timed_write(self, batch: Batch) -> WriteResult:
        started = time.perf_counter()
        result = self._writer.write(batch)
        self._metrics.write_seconds.observe(time.perf_counter() - started)
        return result

    def _committed(self, batch: Batch, result: WriteResult) -> None:
        log.debug(
            "committed %d readings (%d new) from %d messages",
            len(batch.readings),
            result.written,
            len(batch.messages),
        )
        self._acknowledge(batch)
        self._count(batch, result)

    def _acknowledge(self, batch: Batch) -> None:
        if batch.messages:
            self.ack(batch.acks)

    def _count(self, batch: Batch, result: WriteResult) -> None:
        m = self._metrics
        m.readings_written.inc(result.written)
        m.readings_duplicate.inc(result.duplicates)
        m.batch_readings.observe(len(batch.readings))
        for q in result.quarantined:
            m.messages_quarantined.labels(q.reason).inc()
        count_quarantine(m, result)
        readings = batch.readings
        if readings:
            # Lag of up to 100 readings spread over the batch: a per-reading histogram would
            # cost more than the rest of the bookkeeping.
            now = datetime.now(UTC)
            step = max(1, len(readings) // _LAG_SAMPLES)
            observe = m.lag_seconds.observe
            for reading in readings[::step]:
                observe((now - reading[0]).total_seconds())

    def _hold_strangers(self, batch: Batch) -> None:
        """Policy `quarantine`: messages of devices not in the registry are held. An unknown
        device makes us look in the registry again (at most once a second), so a device
        registered a moment ago is accepted at once."""
        strangers = batch.devices() - self._registered
        if strangers and time.monotonic() - self._registry_read > 1.0 and self._writer_up():
            try:
                self._registered = self._writer.registered_devices()
                self._registry_read = time.monotonic()
            except DatabaseDown:
                pass  # judged on what we knew; the batch goes to the spool anyway
            strangers = batch.devices() - self._registered
        if strangers:
            batch.hold_devices(strangers, UNREGISTERED, "not in the registry: ")
