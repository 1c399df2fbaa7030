"""The readings store behind one interface: plain PostgreSQL partitions or TimescaleDB.

Migrations create the tables of the flavor chosen at first migration; this module runs what each
flavor needs while Pantau is up. Plain: daily partitions ahead and behind, retention by dropping
partitions, rollups refreshed every minute. TimescaleDB: its own jobs do that; Pantau only sets
the retention policy from the settings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

import psycopg

from pantau.migrate import Flavor
from pantau.settings import StorageSettings

log = logging.getLogger(__name__)

# Only one instance maintains partitions and rollups at a time; others skip the round.
MAINTENANCE_LOCK_KEY = 0x70616E746176
PARTITIONED_TABLES = ("readings", "readings_1m")


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


@dataclass
class PlainStorage:
    settings: StorageSettings
    flavor: Flavor = "plain"

    async def apply_policies(self, conn: psycopg.AsyncConnection) -> None:
        await self.maintain(conn, datetime.now(UTC).date())

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


@dataclass
class TimescaleStorage:
    settings: StorageSettings
    flavor: Flavor = "timescale"

    async def apply_policies(self, conn: psycopg.AsyncConnection) -> None:
        async with conn.transaction():
            await conn.execute("SELECT remove_retention_policy('readings', if_exists => true)")
            await conn.execute(
                "SELECT add_retention_policy('readings', make_interval(days => %s))",
                (self.settings.retention_days,),
            )

    async def maintain(self, conn: psycopg.AsyncConnection, today: date) -> MaintenanceReport:
        return MaintenanceReport()  # chunks and retention are TimescaleDB jobs

    async def refresh_rollups(self, conn: psycopg.AsyncConnection, now: datetime) -> None:
        return None  # continuous aggregate policies refresh themselves


def storage_for(flavor: Flavor, settings: StorageSettings) -> Storage:
    return TimescaleStorage(settings) if flavor == "timescale" else PlainStorage(settings)


def _scalar(row: tuple[int] | None) -> int:
    return int(row[0]) if row else 0
