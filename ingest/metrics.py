"""The ingestion pipeline's Prometheus series (built on the registry passed in)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ingest.decoders import REASONS
from ingest.writer import KINDS

if TYPE_CHECKING:
    from ingest.writer import WriteResult


@dataclass(frozen=True)
class IngestMetrics:
    messages_received: Counter
    messages_acked: Counter
    messages_quarantined: Counter
    readings_written: Counter
    readings_duplicate: Counter
    batch_readings: Histogram
    write_seconds: Histogram
    lag_seconds: Histogram
    pending_messages: Gauge
    spool_bytes: Gauge
    spool_oldest_seconds: Gauge
    database_connected: Gauge
    mqtt_connected: Gauge
    mqtt_reconnects: Counter
    readings_conflicting: Counter
    quarantine_summarised: Counter
    quarantine_dropped: Counter
    database_errors: Counter
    spool_full: Gauge
    spool_disk_full: Gauge
    dead_letters: Counter
    dead_letter_bytes: Gauge
    status_messages: Counter
    retired_sessions: Counter
    retired_messages: Counter
    retiring_sessions: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> IngestMetrics:
        quarantined = Counter(
            "pantau_ingest_messages_quarantined",
            "Messages kept in quarantine, by reason",
            ["reason"],
            registry=registry,
        )
        for reason in REASONS:
            quarantined.labels(reason)
        database_errors = Counter(
            "pantau_ingest_database_errors",
            "Failed database writes and connection attempts of the ingestion writer, by kind",
            ["kind"],
            registry=registry,
        )
        for kind in KINDS:
            database_errors.labels(kind)
        dead_letters = Counter(
            "pantau_ingest_dead_letters",
            "Spool records set aside in <spool_dir>/dead (refused on replay, or corrupt)",
            ["kind"],
            registry=registry,
        )
        for kind in ("refused", "corrupt"):
            dead_letters.labels(kind)
        status_messages = Counter(
            "pantau_ingest_status_messages",
            "Status and last-will messages written to the database (pantau_report_status), by "
            "the state they report",
            ["state"],
            registry=registry,
        )
        for state in ("online", "offline"):
            status_messages.labels(state)
        return cls(
            messages_received=Counter(
                "pantau_mqtt_messages_received", "MQTT messages received", registry=registry
            ),
            messages_acked=Counter(
                "pantau_mqtt_messages_acknowledged",
                "QoS 1 messages acknowledged to the broker (after they were durable)",
                registry=registry,
            ),
            messages_quarantined=quarantined,
            readings_written=Counter(
                "pantau_ingest_readings_written", "New rows in readings", registry=registry
            ),
            readings_duplicate=Counter(
                "pantau_ingest_readings_duplicate",
                "Readings already stored (redeliveries), ignored",
                registry=registry,
            ),
            batch_readings=Histogram(
                "pantau_ingest_batch_readings",
                "Readings per database write",
                buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 25000, 50000),
                registry=registry,
            ),
            write_seconds=Histogram(
                "pantau_ingest_write_seconds",
                "Time to commit one batch",
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
                registry=registry,
            ),
            lag_seconds=Histogram(
                "pantau_ingest_lag_seconds",
                "Commit time minus reading time (up to 100 readings sampled per batch)",
                buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
                registry=registry,
            ),
            pending_messages=Gauge(
                "pantau_ingest_pending_messages",
                "Messages received and not yet written or spooled",
                registry=registry,
            ),
            spool_bytes=Gauge(
                "pantau_ingest_spool_bytes", "Bytes waiting in the spool", registry=registry
            ),
            spool_oldest_seconds=Gauge(
                "pantau_ingest_spool_oldest_seconds",
                "Age of the oldest batch in the spool",
                registry=registry,
            ),
            database_connected=Gauge(
                "pantau_ingest_database_connected",
                "1 while the ingestion writer is connected to PostgreSQL",
                registry=registry,
            ),
            mqtt_connected=Gauge(
                "pantau_mqtt_connected", "1 while connected to the MQTT broker", registry=registry
            ),
            mqtt_reconnects=Counter(
                "pantau_mqtt_reconnects", "Reconnect attempts to the MQTT broker", registry=registry
            ),
            **_quarantine_metrics(registry),
            database_errors=database_errors,
            spool_full=Gauge(
                "pantau_ingest_spool_full",
                "1 while the spool refuses batches (size limit or disk): nothing is acknowledged",
                registry=registry,
            ),
            spool_disk_full=Gauge(
                "pantau_ingest_spool_disk_full",
                "1 while the spool's disk refuses writes (full, over quota, I/O error)",
                registry=registry,
            ),
            dead_letters=dead_letters,
            dead_letter_bytes=Gauge(
                "pantau_ingest_dead_letter_bytes",
                "Bytes of dead letters kept in <spool_dir>/dead",
                registry=registry,
            ),
            status_messages=status_messages,
            retired_sessions=Counter(
                "pantau_ingest_retired_sessions",
                "MQTT sessions of an earlier ingest layout drained and ended (ingest/retire.py)",
                registry=registry,
            ),
            retired_messages=Counter(
                "pantau_ingest_retired_messages",
                "Messages taken from the queues of retired MQTT sessions",
                registry=registry,
            ),
            retiring_sessions=Gauge(
                "pantau_ingest_retiring_sessions",
                "Retired MQTT sessions this pipeline is still to drain and end",
                registry=registry,
            ),
        )


def _quarantine_metrics(registry: CollectorRegistry) -> dict[str, Counter]:
    summarised = Counter(
        "pantau_ingest_quarantine_summarised",
        "Quarantined messages only counted, not kept whole (over the per-device hourly cap)",
        ["reason"],
        registry=registry,
    )
    dropped = Counter(
        "pantau_ingest_quarantine_dropped",
        "Quarantined payloads deleted, oldest first, to stay under ingest.quarantine_max_bytes",
        ["reason"],
        registry=registry,
    )
    for reason in REASONS:
        summarised.labels(reason)
        dropped.labels(reason)
    return {
        "readings_conflicting": Counter(
            "pantau_ingest_readings_conflicting",
            "Readings for an already stored (device, metric, time) with another value; the "
            "first stored value is kept",
            registry=registry,
        ),
        "quarantine_summarised": summarised,
        "quarantine_dropped": dropped,
    }


def count_quarantine(m: IngestMetrics, result: WriteResult) -> None:
    """A written batch's conflicting readings and what the quarantine's bounds left out."""
    m.readings_conflicting.inc(result.conflicting)
    for reason, n in result.stored.summarised.items():
        m.quarantine_summarised.labels(reason).inc(n)
    for reason, n in result.quarantine_dropped.items():
        m.quarantine_dropped.labels(reason).inc(n)
