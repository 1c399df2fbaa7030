"""What the shell hands each domain when the service starts."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from psycopg_pool import AsyncConnectionPool

from pantau.health import Readiness
from pantau.settings import Settings


@dataclass(frozen=True)
class ServiceContext:
    settings: Settings
    pool: AsyncConnectionPool
    registry: CollectorRegistry
    readiness: Readiness
