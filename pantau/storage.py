"""The readings store behind one interface: plain PostgreSQL partitions or TimescaleDB.

Migrations create the tables of the flavor chosen at first migration; this module runs what each
flavor needs while Pantau is up. Plain: daily partitions ahead and behind, retention by dropping
partitions, rollups refreshed every minute. TimescaleDB: its own jobs do that; Pantau only sets
the retention policy from the settings.

Both: readings written late (spool replay, broker backlog, quarantine replay, a logger uploading a
day) lie before the regular refresh window. The writer notes such a batch's time range in
`rollup_pending` in the batch's transaction (migration 0005); `refresh_late` coalesces the noted
ranges into whole hours and refreshes them: a replay of thousands of batches is a few refreshes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

import psycopg

from pantau.migrate import Flavor
from pantau.settings import StorageSettings

log = logging.getLogger(__name__)

# Only one instance maintains partitions and rollups at a time; others skip the round.
MAINTENANCE_LOCK_KEY = 0x70616E746176
LATE_LOCK_KEY = 0x70616E746177  # TimescaleDB's late refresh: a session lock (autocommit)
PARTITIONED_TABLES = ("readings", "readings_1m")
HOUR = timedelta(hours=1)
# TimescaleDB's 1 minute aggregate policy refreshes 3 hours back (migration 0001); a batch older
# than this (with room for the policy's 1 minute schedule) is refreshed by Pantau.
TIMESCALE_LATE_AFTER = timedelta(hours=3) - timedelta(minutes=10)
# Noted ranges taken per round; the rest waits for the next one.
LATE_RANGES_PER_ROUND = 100_000


@dataclass(frozen=True)
class MaintenanceReport:
    created: int = 0
    dropped: int = 0


class Storage(Protocol):
    flavor: Flavor

    async def apply_policies(self, conn: psycopg.AsyncConnection) -> None:
        """Bring retention in line with the settings; run at start."""

    async def maintain(self, conn: psycopg.AsyncConnection, today: date) -> MaintenanceReport:
        """Create what the next days need and drop what retention allows."""

    async def refresh_rollups(self, conn: psycopg.AsyncConnection, now: datetime) -> None:
        """Bring the 1 minute and 1 hour rollups up to `now`."""

    async def refresh_late(self, conn: psycopg.AsyncConnection, now: datetime) -> int:
        """Refresh the rollups over the ranges of late batches; `conn` is idle, outside a
        transaction. Returns how many coalesced ranges were refreshed."""


def coalesce(
    ranges: Iterable[tuple[datetime, datetime]], *, not_before: datetime | None = None
) -> list[tuple[datetime, datetime]]:
    """Noted (earliest, latest) ranges as few half-open [from, to) ranges of whole UTC hours
    (the 1 hour rollup recomputes whole hours), overlapping and adjacent ones merged."""
    aligned = []
    for first, last in ranges:
        start, end = _hour(first), _hour(last) + HOUR
        if not_before is not None:
            start = max(start, _hour(not_before))
        if start < end:
            aligned.append((start, end))
    aligned.sort()
    merged: list[tuple[datetime, datetime]] = []
    for start, end in aligned:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _hour(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


async def _set_late_after(conn: psycopg.AsyncConnection, late_after: timedelta) -> None:
    await conn.execute("UPDATE rollup_window SET late_after = %s", (late_after,))


@dataclass
class PlainStorage:
    settings: StorageSettings
    flavor: Flavor = "plain"

    async def apply_policies(self, conn: psycopg.AsyncConnection) -> None:
        await self.maintain(conn, datetime.now(UTC).date())
        await _set_late_after(conn, self.late_after)

    @property
    def late_after(self) -> timedelta:
        """How old a reading must be for the regular refresh to miss it: the lookback less the
        time until the next refresh, less a minute for a slow round."""
        s = self.settings
        seconds = s.rollup_lookback_minutes * 60 - s.rollup_refresh_seconds - 60
        return timedelta(seconds=max(0.0, seconds))

    async def maintain(self, conn: psycopg.AsyncConnection, today: date) -> MaintenanceReport:
        first = today - timedelta(days=self.settings.partitions_behind_days)
        last = today + timedelta(days=self.settings.partitions_ahead_days)
        keep_from = today - timedelta(days=self.settings.retention_days)
        created = dropped = 0
        async with conn.transaction():
            for table in PARTITIONED_TABLES:
                cur = await conn.execute(
                    "SELECT pantau_ensure_partitions(%s, %s, %s)", (table, first, last)
                )
                created += _scalar(await cur.fetchone())
                cur = await conn.execute(
                    "SELECT pantau_drop_partitions(%s, %s)", (table, keep_from)
                )
                dropped += _scalar(await cur.fetchone())
        if created or dropped:
            log.info("storage: created %d and dropped %d daily partitions", created, dropped)
        return MaintenanceReport(created, dropped)

    async def refresh_rollups(self, conn: psycopg.AsyncConnection, now: datetime) -> None:
        start = now - timedelta(minutes=self.settings.rollup_lookback_minutes)
        async with conn.transaction():
            await conn.execute("SELECT pantau_refresh_rollups(%s, %s)", (start, now))

    async def refresh_late(self, conn: psycopg.AsyncConnection, now: datetime) -> int:
        # One transaction: the noted ranges are deleted only with their refresh committed.
        async with conn.transaction():
            cur = await conn.execute(
                "SELECT pg_try_advisory_xact_lock(%s)", (MAINTENANCE_LOCK_KEY,)
            )
            if not _scalar(await cur.fetchone()):
                return 0
            cur = await conn.execute(
                "DELETE FROM rollup_pending WHERE id IN"
                " (SELECT id FROM rollup_pending ORDER BY id LIMIT %s)"
                " RETURNING from_time, to_time",
                (LATE_RANGES_PER_ROUND,),
            )
            noted = await cur.fetchall()
            ranges = coalesce(noted, not_before=_keep_from(self.settings, now))
            for start, end in ranges:
                await conn.execute("SELECT pantau_refresh_rollups(%s, %s)", (start, end))
        _log_late(len(noted), ranges)
        return len(ranges)


@dataclass
class TimescaleStorage:
    settings: StorageSettings
    flavor: Flavor = "timescale"

    async def apply_policies(self, conn: psycopg.AsyncConnection) -> None:
        async with conn.transaction():
            # readings_1m goes with the readings, as the plain path drops its partitions with
            # theirs; readings_1h is kept (small: 24 rows a series a day).
            for table in ("readings", "readings_1m"):
                await conn.execute(
                    "SELECT remove_retention_policy(%s::regclass, if_exists => true)", (table,)
                )
                await conn.execute(
                    "SELECT add_retention_policy(%s::regclass, make_interval(days => %s))",
                    (table, self.settings.retention_days),
                )
            await _set_late_after(conn, TIMESCALE_LATE_AFTER)

    async def maintain(self, conn: psycopg.AsyncConnection, today: date) -> MaintenanceReport:
        return MaintenanceReport()  # chunks and retention are TimescaleDB jobs

    async def refresh_rollups(self, conn: psycopg.AsyncConnection, now: datetime) -> None:
        return None  # continuous aggregate policies refresh themselves

    async def refresh_late(self, conn: psycopg.AsyncConnection, now: datetime) -> int:
        # refresh_continuous_aggregate cannot run inside a transaction block: autocommit, a
        # session lock instead of a transaction's, and the noted rows deleted by id only after
        # their ranges were refreshed (a failure leaves them for the next round).
        await conn.set_autocommit(True)
        try:
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (LATE_LOCK_KEY,))
            if not _scalar(await cur.fetchone()):
                return 0
            try:
                cur = await conn.execute(
                    "SELECT id, from_time, to_time FROM rollup_pending ORDER BY id LIMIT %s",
                    (LATE_RANGES_PER_ROUND,),
                )
                rows = await cur.fetchall()
                if not rows:
                    return 0
                ranges = coalesce(
                    ((r[1], r[2]) for r in rows), not_before=_keep_from(self.settings, now)
                )
                for start, end in ranges:
                    for view in ("readings_1m", "readings_1h"):
                        await conn.execute(
                            "CALL refresh_continuous_aggregate("
                            "%s::regclass, %s::timestamptz, %s::timestamptz)",
                            (view, start, end),
                        )
                await conn.execute(
                    "DELETE FROM rollup_pending WHERE id = ANY(%s)", ([r[0] for r in rows],)
                )
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (LATE_LOCK_KEY,))
        finally:
            await conn.set_autocommit(False)
        _log_late(len(rows), ranges)
        return len(ranges)


def storage_for(flavor: Flavor, settings: StorageSettings) -> Storage:
    return TimescaleStorage(settings) if flavor == "timescale" else PlainStorage(settings)


def _keep_from(settings: StorageSettings, now: datetime) -> datetime:
    """Nothing older than retention is refreshed: its readings are (being) dropped."""
    return now - timedelta(days=settings.retention_days)


def _log_late(noted: int, ranges: list[tuple[datetime, datetime]]) -> None:
    if ranges:
        hours = sum((end - start) / HOUR for start, end in ranges)
        log.info(
            "rollups: refreshed %d late batches as %d ranges (%g hours)",
            noted,
            len(ranges),
            hours,
        )


def _scalar(row: tuple[object, ...] | None) -> int:
    return int(row[0]) if row and row[0] is not None else 0  # type: ignore[call-overload]
