"""The ingestion pipeline: MQTT thread → inbox → writer thread → PostgreSQL or spool → acks.

The subscriber's network thread only appends to the inbox. The writer thread takes batches (by
count, or when the oldest message has waited `batch_max_wait_seconds`), decodes them, commits
them, and only then releases their acknowledgements. While the database is down (any error
`ingest.writer.classify` calls so), batches go to the spool (fsynced) and are acknowledged, and
the database is tried again with backoff; when it returns, the spool is replayed in order before
anything new is written. A batch the database refuses for another reason is spooled too and
reported; on replay it is set aside as a dead letter, so the replay goes on. When the spool is
full (its size limit, or its disk), nothing more is acknowledged: the broker keeps the messages
(its receive-maximum window stops the flow), and the inbox stays bounded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from ingest.batch import Batch, Message, Processor
from ingest.decoders import UNREGISTERED
from ingest.metrics import IngestMetrics, count_quarantine
from ingest.spool import Record, Spool, SpoolDiskFull, SpoolFull
from ingest.writer import DatabaseDown, WriteFailed, Writer, WriteResult
from pantau.settings import IngestSettings
from pantau.supervisor import Backoff

log = logging.getLogger(__name__)

_LAG_SAMPLES = 100
# "Down" kinds that one batch can also cause itself (its statement times out, takes too much
# memory, deadlocks): a spooled batch failing so this many replays in a row is set aside (kept
# in dead/, replayable) rather than blocking the spool behind it.
_BATCH_KINDS = frozenset({"transient", "insufficient_resources"})
_SAME_FAILURES = 3
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
        self._db_failures = 0  # connection attempts failed in a row (for the backoff)
        self._registered: frozenset[str] = frozenset()
        self._registry_read: float | None = None  # monotonic time of the last registry read
        self._spool_full_since: float | None = None
        # (segment, offset) of the spooled batch that last failed with a _BATCH_KINDS error,
        # and how many replays in a row it did.
        self._stuck: tuple[tuple[Path, int], int] | None = None
        # Why the pipeline is not taking messages normally (for /readyz), None when it is.
        self.database_problem: str | None = None
        self.spool_problem: str | None = None
        self.ack: AckFn = lambda acks: None
        metrics.pending_messages.set_function(lambda: len(self._filling.messages))
        metrics.spool_bytes.set_function(lambda: self._spool.size)
        metrics.spool_oldest_seconds.set_function(self._spool.oldest_age)
        metrics.dead_letter_bytes.set_function(lambda: self._spool.dead.size)

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
        if not self._commit(batch):
            self._spool_or_hold(batch)

    def _commit(self, batch: Batch) -> bool:
        """Write and acknowledge the batch if the database is up (spool replayed first)."""
        if not self._database_ready():
            return False
        try:
            self._judge(batch)
            result = self._timed_write(batch)
        except DatabaseDown as exc:
            self._database_lost(exc)
            return False
        except Exception as exc:  # spooled and reported, never a restart loop
            self._write_failed(exc, "spooling the batch; replaying it sets it aside")
            return False
        self._committed(batch, result)
        return True

    def _spool_or_hold(self, batch: Batch) -> None:
        """Spool and acknowledge; when the spool is full (its limit or its disk), keep the batch
        unacknowledged until the database returns (or we stop: then the broker redelivers it)."""
        while True:
            try:
                self._spool.append(batch)
            except SpoolFull as exc:
                self._spool_full(exc)
                with self._cond:
                    if self._stopping:
                        return
                    self._cond.wait(self._settings.database_retry_seconds)
                if self._commit(batch):
                    self._spool_ok()
                    return
                continue
            self._spool_ok()
            self._acknowledge(batch)
            return

    def _spool_full(self, exc: SpoolFull) -> None:
        disk = isinstance(exc, SpoolDiskFull)
        self.spool_problem = (
            f"{exc}: not acknowledging, the broker holds new messages until the database returns"
        )
        self._metrics.spool_full.set(1)
        self._metrics.spool_disk_full.set(1 if disk else 0)
        if self._spool_full_since is None:
            self._spool_full_since = time.monotonic()
            log.error("%s and the database is down: no longer acknowledging", exc)

    def _spool_ok(self) -> None:
        if self._spool_full_since is not None:
            log.info(
                "spool takes batches again after %.1fs; acknowledging",
                time.monotonic() - self._spool_full_since,
            )
        self._spool_full_since = None
        self.spool_problem = None
        self._metrics.spool_full.set(0)
        self._metrics.spool_disk_full.set(0)

    def _database_ready(self) -> bool:
        """Connected (trying again with backoff) and the spool replayed; False while the
        database is down."""
        if not self._writer_up():
            return False
        for segment in self._spool.segments():
            if not self._replay(segment):
                return False
            self._spool.consumed(segment)
        return True

    def _replay(self, segment: Path) -> bool:
        """Write every batch of a segment; set aside what cannot be. False if the database
        went down (the segment stays and is replayed from its start next time)."""
        replayed = 0
        for record in self._spool.records(segment):
            batch = record.batch
            if batch is None:
                if not self._set_aside(segment, record, record.problem, "corrupt"):
                    return False
                continue
            try:
                self._judge(batch)
                result = self._timed_write(batch)
            except DatabaseDown as exc:
                if not self._keeps_failing(segment, record, exc):
                    self._database_lost(exc)
                    return False
                self._metrics.database_errors.labels(exc.kind).inc()
                error = f"failed {_SAME_FAILURES} replays in a row ({exc.kind}): {exc}"
                if not self._set_aside(segment, record, error, "refused"):
                    return False
                continue
            except Exception as exc:  # a poison record must not block the spool
                self._write_failed(exc, "setting the spooled batch aside")
                error = str(exc) if isinstance(exc, WriteFailed) else f"{type(exc).__name__}: {exc}"
                if not self._set_aside(segment, record, error, "refused"):
                    return False
                continue
            self._count(batch, result)
            replayed += len(batch)
        log.info("replayed %d readings from spool %s", replayed, segment.name)
        return True

    def _keeps_failing(self, segment: Path, record: Record, exc: DatabaseDown) -> bool:
        """True when this batch failed with a kind it may cause itself, `_SAME_FAILURES`
        replays in a row; a real outage fails whatever batch comes first, and that one only
        until the database is back."""
        if exc.kind not in _BATCH_KINDS:
            self._stuck = None
            return False
        key = (segment, record.offset)
        times = self._stuck[1] + 1 if self._stuck is not None and self._stuck[0] == key else 1
        self._stuck = (key, times)
        if times < _SAME_FAILURES:
            return False
        self._stuck = None
        log.error(
            "spooled batch at %s:%d failed %d replays in a row (%s); setting it aside",
            segment.name,
            record.offset,
            times,
            exc,
        )
        return True

    def _set_aside(self, segment: Path, record: Record, error: str, kind: str) -> bool:
        try:
            self._spool.set_aside(segment, record, error)
        except OSError as exc:
            self.spool_problem = f"cannot set a spool record aside in {self._spool.dead.directory}"
            log.error("%s: %s; the replay waits", self.spool_problem, exc)
            return False
        self._metrics.dead_letters.labels(kind).inc()
        return True

    def _writer_up(self) -> bool:
        if self._writer.connected:
            return True
        now = time.monotonic()
        if now < self._next_db_try:
            return False
        try:
            self._writer.connect()
        except DatabaseDown as exc:
            self._database_lost(exc, attempt=True)
            return False
        log.info("ingestion writer connected to the database")
        self._db_failures = 0
        self.database_problem = None
        self._metrics.database_connected.set(1)
        return True

    def _database_lost(self, exc: DatabaseDown, *, attempt: bool = False) -> None:
        self._metrics.database_errors.labels(exc.kind).inc()
        self._metrics.database_connected.set(0)
        delay = self._backoff(self._db_failures)
        self._db_failures += 1
        self._next_db_try = time.monotonic() + delay
        self.database_problem = (
            f"database down ({exc}); spooling to {self._spool.directory}, next try in {delay:.1f}s"
        )
        if attempt:
            log.warning("database still down (%s); next try in %.1fs", exc, delay)
        else:
            log.error("database write failed (%s); spooling to %s", exc, self._spool.directory)

    def _backoff(self, failures: int) -> float:
        s = self._settings
        delay = Backoff(s.database_retry_seconds, s.database_retry_max_seconds).delay(failures)
        return max(s.database_retry_seconds, delay)

    def _write_failed(self, exc: Exception, then: str) -> None:
        kind = exc.kind if isinstance(exc, WriteFailed) else "other"
        self._metrics.database_errors.labels(kind).inc()
        if isinstance(exc, WriteFailed):
            log.error("database refused a batch (%s); %s", exc, then)
        else:
            log.exception("writing a batch failed; %s", then)

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
        for status in batch.statuses:
            m.status_messages.labels("online" if status.up else "offline").inc()
        readings = batch.readings
        if readings:
            # Lag of up to 100 readings spread over the batch: a per-reading histogram would
            # cost more than the rest of the bookkeeping.
            now = datetime.now(UTC)
            step = max(1, len(readings) // _LAG_SAMPLES)
            observe = m.lag_seconds.observe
            for reading in readings[::step]:
                observe((now - reading[0]).total_seconds())

    def _judge(self, batch: Batch) -> None:
        """Policy `quarantine`: messages of devices not in the registry are held. A batch is
        only judged against a registry read from the database (never a cold or failed cache):
        when it cannot be read, DatabaseDown spools the batch unjudged and the replay judges it.
        An unknown device makes us read the registry again (at most once a second), so a device
        registered a moment ago is accepted at once."""
        if self._settings.unregistered_devices != "quarantine":
            return
        strangers = batch.devices() - self._registered
        read = self._registry_read
        if strangers and (read is None or time.monotonic() - read > 1.0):
            self._writer.connect()
            self._registered = self._writer.registered_devices()
            self._registry_read = time.monotonic()
            strangers = batch.devices() - self._registered
        if strangers:
            batch.hold_devices(strangers, UNREGISTERED, "not in the registry: ")
