"""The COPY writer: a batch goes into `readings` in one transaction, with `device_last_seen`, the
statuses its devices reported (`pantau_report_status`) and the batch's quarantined payloads.
Binary COPY goes straight into `readings` (inside a savepoint); when that collides with rows
already there (a redelivery), the batch goes through a staging table and an idempotent insert
instead. A batch the database refuses is split to find the bad rows.

Runs on the ingestion writer thread with a plain (sync) psycopg connection: the event loop stays
free for HTTP, and COPY formatting happens in psycopg's C code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import errors

from ingest import quarantine
from ingest.batch import Batch, Quarantined, StatusReport
from ingest.decoders import REJECTED, Reading
from pantau.arrivals import RECORD_ARRIVALS

if TYPE_CHECKING:
    from pantau.settings import Settings

log = logging.getLogger(__name__)

# TCP keepalives and a user timeout, so a connection whose peer died silently (a host gone, a
# dropped NAT entry) fails within about a minute instead of hanging the writer thread in a COPY
# for the kernel's two hours: probes after 30 s idle, every 10 s, 3 unanswered = dead (60 s);
# data unacknowledged for 60 s = dead. No statement_timeout: a long COPY is not a dead one.
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60_000,  # milliseconds
}

_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS readings_staging (
    time timestamptz, device_id text, metric text, value double precision
) ON COMMIT DELETE ROWS
"""
_COPY_STAGING = "COPY readings_staging (time, device_id, metric, value) FROM STDIN (FORMAT BINARY)"
_COPY_DIRECT = "COPY readings (time, device_id, metric, value) FROM STDIN (FORMAT BINARY)"
_TYPES = ["timestamptz", "text", "text", "float8"]
_MERGE = """
INSERT INTO readings (time, device_id, metric, value)
SELECT time, device_id, metric, value FROM readings_staging
ON CONFLICT DO NOTHING
"""
# Status and last-will messages, one per device (its last in the batch), after RECORD_ARRIVALS. A
# status is dated by its arrival, but not before a reading that arrived ahead of it: readings
# stamp device_last_seen with the commit's now(), a little after their arrival, and the
# detector takes a report older than the last arrival for stale. So a status processed after a
# device's readings (in this batch, or committed a moment ago: up to a minute behind, the
# writer's lag) is dated no earlier than them. A status followed by readings of its device in
# the same batch, or older than that (a quarantine replay, a long spool replay), keeps its
# arrival time, and the readings win.
_STATUS = """
SELECT count(*) FILTER (WHERE pantau_report_status(
           u.device_id, u.up, u.cause,
           CASE WHEN NOT u.read_after AND s.last_received_at - u.at <= interval '60 seconds'
                THEN GREATEST(u.at, s.last_received_at)
                ELSE u.at END))
FROM unnest(%s::text[], %s::boolean[], %s::text[], %s::timestamptz[], %s::boolean[])
     AS u (device_id, up, cause, at, read_after)
LEFT JOIN device_last_seen s USING (device_id)
"""
# Only on the collision path: of the staged rows not inserted, those whose stored value differs.
_CONFLICTING = """
SELECT count(*) FROM readings_staging s
JOIN readings r ON r.device_id = s.device_id AND r.metric = s.metric AND r.time = s.time
WHERE r.value IS DISTINCT FROM s.value
"""


class DatabaseDown(Exception):
    """PostgreSQL cannot take writes now (see `classify`); the batch was not written."""

    def __init__(self, message: str, kind: str = "connection_lost") -> None:
        super().__init__(message)
        self.kind = kind


class WriteFailed(Exception):
    """The database refused the batch for a reason that is neither "down" nor a bad row."""

    def __init__(self, message: str, kind: str = "other") -> None:
        super().__init__(message)
        self.kind = kind


# Errors by kind. These mean "the database is down (or will not write) for now": spool and retry.
DOWN_KINDS: dict[type[psycopg.Error], str] = {
    errors.ReadOnlySqlTransaction: "read_only",  # a demoted primary, or read-only by default
    errors.AdminShutdown: "admin_shutdown",
    errors.CrashShutdown: "admin_shutdown",
    errors.CannotConnectNow: "cannot_connect_now",  # starting up, or in recovery
    errors.DiskFull: "disk_full",
    errors.TooManyConnections: "too_many_connections",
    errors.InsufficientResources: "insufficient_resources",  # incl. out of memory
    errors.IdleSessionTimeout: "connection_lost",
    errors.QueryCanceled: "transient",  # statement_timeout, pg_cancel_backend
    errors.TransactionRollback: "transient",  # deadlock, serialization failure
    errors.LockNotAvailable: "transient",
}
# A refused connection carries no SQLSTATE in psycopg: its kind is read from the server's message
# (English messages; with another lc_messages it is "connection_lost", the text says the rest).
_CONNECT_KINDS = (
    ("too many connections", "too_many_connections"),
    ("connection slots are reserved", "too_many_connections"),
    ("the database system is", "cannot_connect_now"),  # starting up, in recovery, shutting down
    ("not accepting connections", "cannot_connect_now"),
    ("due to administrator command", "admin_shutdown"),
    ("no space left on device", "disk_full"),
    ("out of memory", "insufficient_resources"),
)
KINDS = (*sorted(set(DOWN_KINDS.values()) | {"connection_lost"}), "other")


def classify(exc: psycopg.Error) -> DatabaseDown | WriteFailed:
    """What an error that reached the writer means: DatabaseDown (spool, retry with backoff)
    or WriteFailed (spool the batch, report it; on replay it is set aside)."""
    text = " ".join(str(exc).split())
    for cls, kind in DOWN_KINDS.items():
        if isinstance(exc, cls):
            return DatabaseDown(f"{kind.replace('_', ' ')}: {text}", kind)
    if isinstance(exc, psycopg.InterfaceError | errors.ConnectionException) or (
        isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None
    ):
        lower = text.lower()
        kind = next((k for needle, k in _CONNECT_KINDS if needle in lower), "connection_lost")
        return DatabaseDown(text, kind)  # refused, reset, closed, timed out
    return WriteFailed(f"{type(exc).__name__.rstrip('_')} ({exc.sqlstate}): {text}")


@dataclass
class WriteResult:
    written: int = 0  # new rows in readings
    duplicates: int = 0  # rows already there with the same value (redeliveries)
    conflicting: int = 0  # rows already there with another value (the first one is kept)
    quarantined: list[Quarantined] = field(default_factory=list)  # incl. refused rows' payloads
    stored: quarantine.Stored = field(default_factory=quarantine.Stored)
    quarantine_dropped: dict[str, int] = field(default_factory=dict)  # by the size cap, by reason
    statuses_kept: int = 0  # statuses of registered devices, not older than the one kept


class Writer:
    """Owns one connection; `write()` either commits the whole batch or raises DatabaseDown."""

    def __init__(
        self,
        conninfo: str,
        *,
        connect_timeout: int = 5,
        policy: quarantine.Policy | None = None,
        schema_ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self._conninfo = conninfo
        self._connect_timeout = connect_timeout
        self._conn: psycopg.Connection | None = None
        self._policy = policy or quarantine.Policy()
        # Payload bytes quarantined since the size cap was last checked (None: check soon).
        self._since_trim: int | None = None
        self._schema_ready = schema_ready  # False until the service has migrated: spool

    @classmethod
    def from_settings(
        cls, settings: Settings, *, schema_ready: Callable[[], bool] = lambda: True
    ) -> Writer:
        """The writer every command and the service use: the database's connect timeout and
        the quarantine policy (`ingest.quarantine_*`) from the settings."""
        return cls(
            settings.database.url,
            connect_timeout=max(2, int(settings.database.connect_timeout_seconds)),
            policy=quarantine.Policy.from_settings(settings.ingest),
            schema_ready=schema_ready,
        )

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def connect(self) -> None:
        if self.connected:
            return
        if not self._schema_ready():
            raise DatabaseDown("waiting for the database and its migrations")
        conn = None
        try:
            conn = psycopg.connect(
                self._conninfo,
                connect_timeout=self._connect_timeout,
                application_name="pantau-ingest",
                **KEEPALIVES,
            )
            conn.execute(_STAGING)  # refused by a read-only server: it cannot take writes
            conn.commit()
        except psycopg.Error as exc:
            if conn is not None:
                conn.close()
            raise _down(classify(exc)) from exc
        self._conn = conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def write(self, batch: Batch) -> WriteResult:
        """Commit the batch; rows the database refuses go to quarantine with their payload."""
        self.connect()
        result = WriteResult(quarantined=list(batch.quarantine))
        try:
            self._write_all(batch.readings, batch.origins, batch, result)
        except psycopg.Error as exc:
            self.close()  # a new connection for the next batch, whatever state this one is in
            raise classify(exc) from exc
        self._trim(result)
        return result

    def _trim(self, result: WriteResult) -> None:
        """Keep the quarantine under its size cap; checked again after each 1 % of it."""
        if self._since_trim is not None:
            self._since_trim += result.stored.bytes
            if self._since_trim < self._policy.max_bytes // 100:
                return
        conn = self._require()
        try:
            dropped = quarantine.trim(conn, self._policy.max_bytes)
        except psycopg.Error as exc:
            log.warning("could not check the quarantine's size cap: %s", exc)
            if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                self.close()
            return
        self._since_trim = 0
        if dropped:
            log.warning(
                "quarantine over ingest.quarantine_max_bytes (%d): deleted the %d oldest payloads",
                self._policy.max_bytes,
                sum(dropped.values()),
            )
            result.quarantine_dropped = dropped

    def _write_all(
        self, readings: list[Reading], origins: list[int], batch: Batch, result: WriteResult
    ) -> None:
        statuses = batch.last_statuses()
        try:
            self._transaction(readings, result.quarantined, result, statuses)
            return
        except quarantine.REFUSED as exc:
            if isinstance(exc, errors.CheckViolation) and self._add_partitions(readings):
                return self._write_all(readings, origins, batch, result)
            refused = " ".join(str(exc).split())
        # Split to find the refused rows: write each half on its own, down to single rows.
        log.warning(
            "database refused a batch of %d readings (%s); splitting", len(readings), refused
        )
        good, bad = self._bisect(readings, origins)
        bad_messages = sorted({origins[i] for i in bad})
        for index in bad_messages:
            message = batch.messages[index]
            result.quarantined.append(
                Quarantined(
                    message.received_at,
                    message.topic,
                    message.payload,
                    REJECTED,
                    refused[:500],
                    None,
                    readings[next(i for i in bad if origins[i] == index)][1],
                )
            )
        self._transaction([readings[i] for i in good], result.quarantined, result, statuses)

    def _bisect(self, readings: list[Reading], origins: list[int]) -> tuple[list[int], list[int]]:
        """Indexes of the rows the database takes and of those it refuses (tried, then rolled
        back; the caller writes the good ones in one transaction)."""
        conn = self._require()
        good: list[int] = []
        bad: list[int] = []
        todo = [list(range(len(readings)))]
        while todo:
            part = todo.pop()
            try:
                with conn.transaction(force_rollback=True), conn.cursor() as cur:
                    self._copy(cur, [readings[i] for i in part], _COPY_STAGING)
                    cur.execute(_MERGE)
                good.extend(part)
            except quarantine.REFUSED:
                if len(part) == 1:
                    bad.extend(part)
                else:
                    half = len(part) // 2
                    todo.extend([part[:half], part[half:]])
        return sorted(good), bad

    def _transaction(
        self,
        readings: Sequence[Reading],
        quarantined: list[Quarantined],
        result: WriteResult,
        statuses: Sequence[tuple[StatusReport, bool]] = (),
    ) -> None:
        conn = self._require()
        with conn.transaction(), conn.cursor() as cur:
            written = conflicting = 0
            if readings:
                try:
                    with conn.transaction():
                        self._copy(cur, readings, _COPY_DIRECT)
                    written = len(readings)
                except errors.UniqueViolation:
                    # Some are there already (a redelivery): merge, skipping those.
                    self._copy(cur, readings, _COPY_STAGING)
                    cur.execute(_MERGE)
                    written = cur.rowcount
                    if written < len(readings):
                        row = cur.execute(_CONFLICTING).fetchone()
                        conflicting = row[0] if row else 0
                devices, latest = _latest_per_device(readings)
                cur.execute(RECORD_ARRIVALS, (devices, latest))
                # The batch's time range, for the rollups when it is late (the newest reading
                # is the newest of the devices' latest).
                earliest = min(r[0] for r in readings)
                cur.execute("SELECT pantau_note_written(%s, %s)", (earliest, max(latest)))
            kept = _report_statuses(cur, statuses) if statuses else 0
            stored = quarantine.store(conn, quarantined, self._policy)
        result.written += written
        result.conflicting += conflicting
        result.duplicates += len(readings) - written - conflicting
        result.stored = stored
        result.statuses_kept = kept

    @staticmethod
    def _copy(cur: psycopg.Cursor, readings: Sequence[Reading], statement: str) -> None:
        with cur.copy(statement) as copy:
            copy.set_types(_TYPES)
            write_row = copy.write_row
            for row in readings:
                write_row(row)

    def _add_partitions(self, readings: Sequence[Reading]) -> bool:
        """Plain PostgreSQL: create missing daily partitions for the batch's days; False when
        there is nothing to create (then the refusal was something else)."""
        conn = self._require()
        days = sorted({r[0].astimezone(UTC).date() for r in readings})
        try:
            with conn.transaction():
                plain = conn.execute("SELECT to_regproc('pantau_ensure_partitions')").fetchone()
                if not plain or plain[0] is None:
                    return False
                created = 0
                for day in days:
                    row = conn.execute(
                        "SELECT pantau_ensure_partitions('readings', %s, %s)", (day, day)
                    ).fetchone()
                    created += row[0] if row else 0
        except (errors.DuplicateTable, errors.UniqueViolation) as exc:
            # Another session (the storage worker, another ingest process) created the same
            # partition at the same moment: CREATE TABLE IF NOT EXISTS does not wait for it. It
            # is there now: write again.
            log.info("a daily partition was created concurrently (%s); writing again", exc)
            return True
        if created:
            log.info("created %d missing daily partitions for late or early readings", created)
        return created > 0

    def registered_devices(self) -> frozenset[str]:
        """Device ids in the registry that may report (not retired)."""
        conn = self._require()
        try:
            with conn.transaction():
                rows = conn.execute("SELECT device_id FROM devices WHERE status <> 'retired'")
                return frozenset(r[0] for r in rows.fetchall())
        except psycopg.Error as exc:
            self.close()
            raise _down(classify(exc)) from exc

    def _require(self) -> psycopg.Connection:
        if self._conn is None:
            raise DatabaseDown("not connected")
        return self._conn


def _latest_per_device(readings: Sequence[Reading]) -> tuple[list[str], list[datetime]]:
    latest: dict[str, datetime] = {}
    get = latest.get
    for when, device, _, _ in readings:
        seen = get(device)
        if seen is None or when > seen:
            latest[device] = when
    devices = sorted(latest)
    return devices, [latest[d] for d in devices]


def _report_statuses(cur: psycopg.Cursor, statuses: Sequence[tuple[StatusReport, bool]]) -> int:
    """Write (status, read after) rows; how many statuses the database kept."""
    cur.execute(
        _STATUS,
        (
            [s.device for s, _ in statuses],
            [s.up for s, _ in statuses],
            [s.cause for s, _ in statuses],
            [s.received_at for s, _ in statuses],
            [after for _, after in statuses],
        ),
    )
    row = cur.fetchone()
    return int(row[0]) if row else 0


def _down(error: DatabaseDown | WriteFailed) -> DatabaseDown:
    """Connecting or reading the registry: any failure means we cannot write yet."""
    return error if isinstance(error, DatabaseDown) else DatabaseDown(str(error), error.kind)
