"""The PostgreSQL connection pool, opened by the supervisor and closed against a deadline, and
what the service knows of its database (reachable? schema ready?) for the workers that need it."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from pantau.errors import DatabaseUnavailable
from pantau.settings import DatabaseSettings

log = logging.getLogger(__name__)


def _connect_kwargs(settings: DatabaseSettings) -> dict[str, Any]:
    # libpq takes whole seconds and treats anything under 2 as 2.
    return {
        "connect_timeout": max(2, math.ceil(settings.connect_timeout_seconds)),
        "application_name": "pantau",
    }


async def connect(
    settings: DatabaseSettings, *, autocommit: bool = False
) -> psycopg.AsyncConnection:
    """One connection outside the pool (migrations, CLI); failures become DatabaseUnavailable."""
    try:
        return await psycopg.AsyncConnection.connect(
            settings.url, autocommit=autocommit, **_connect_kwargs(settings)
        )
    except psycopg.OperationalError as exc:
        reason = " ".join(str(exc).split())
        raise DatabaseUnavailable(
            f"cannot connect to the database {settings.redacted_url()}: {reason}"
        ) from None


@asynccontextmanager
async def open_pool(settings: DatabaseSettings) -> AsyncIterator[AsyncConnectionPool]:
    """Open the pool without waiting for the database: when it is down, the pool keeps trying in
    the background, and a request for a connection fails after `connect_timeout_seconds`."""
    pool = AsyncConnectionPool(
        settings.url,
        min_size=settings.pool_min_size,
        max_size=max(settings.pool_max_size, settings.pool_min_size),
        kwargs=_connect_kwargs(settings),
        open=False,
        name="pantau",
        timeout=settings.connect_timeout_seconds,
        check=AsyncConnectionPool.check_connection,
        # Give up a failing background connection attempt soon: a later request starts a new
        # one at once, so a database that returns is used within seconds, not after a backoff
        # grown to minutes.
        reconnect_timeout=max(10.0, 2 * settings.connect_timeout_seconds),
    )
    await pool.open(wait=False)
    try:
        yield pool
    finally:
        await pool.close(timeout=5.0)


class DatabaseState:
    """Whether the database is reachable and its schema ready. The service's database worker
    sets it; workers that need the schema wait for it; the ingestion writer thread asks
    `schema_ready()` before it writes (until then it spools)."""

    def __init__(self, *, ready: bool = False) -> None:
        self._schema = threading.Event()  # read by the writer thread
        self._schema_set = asyncio.Event()
        self._up = asyncio.Event()
        self.reason = "not reached yet"  # why it is not usable, for /readyz and logs
        if ready:
            self.mark_schema_ready()
            self.mark_up()

    @classmethod
    def assume_ready(cls) -> DatabaseState:
        """For a context built outside the service (tests, tools): usable from the start."""
        return cls(ready=True)

    def schema_ready(self) -> bool:
        return self._schema.is_set()

    @property
    def up(self) -> bool:
        return self._up.is_set()

    @property
    def usable(self) -> bool:
        return self.up and self.schema_ready()

    def mark_schema_ready(self) -> None:
        self._schema.set()
        self._schema_set.set()

    def mark_up(self) -> None:
        self._up.set()

    def mark_down(self, reason: str) -> None:
        self.reason = reason
        self._up.clear()

    async def wait_usable(self, stop: asyncio.Event) -> bool:
        """Wait until the database is reachable with its schema ready (True) or `stop` (False)."""
        while not stop.is_set():
            if self.usable:
                return True
            events = [e for e in (self._up, self._schema_set) if not e.is_set()] + [stop]
            waits = [asyncio.ensure_future(e.wait()) for e in events]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()
        return False
