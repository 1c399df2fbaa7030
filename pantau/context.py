"""What the shell hands each domain when the service starts."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from psycopg_pool import AsyncConnectionPool

from pantau.db import DatabaseState
from pantau.health import Readiness
from pantau.settings import Settings


@dataclass(frozen=True)
class ServiceContext:
    settings: Settings
    pool: AsyncConnectionPool
    registry: CollectorRegistry
    readiness: Readiness
    # Reachable and migrated? Set by the service's database worker.
    database: DatabaseState = field(default_factory=DatabaseState.assume_ready)
