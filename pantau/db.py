"""The PostgreSQL connection pool, opened by the supervisor and closed against a deadline."""

from __future__ import annotations

import logging
import math
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
    """Open the pool, failing fast with the real reason when the database is unreachable."""
    # A first direct connection gives libpq's own error message; the pool would only time out.
    first = await connect(settings)
    await first.close()
    pool = AsyncConnectionPool(
        settings.url,
        min_size=settings.pool_min_size,
        max_size=max(settings.pool_max_size, settings.pool_min_size),
        kwargs=_connect_kwargs(settings),
        open=False,
        name="pantau",
        timeout=settings.connect_timeout_seconds,
        check=AsyncConnectionPool.check_connection,
    )
    await pool.open(wait=True, timeout=settings.connect_timeout_seconds * 2)
    try:
        yield pool
    finally:
        await pool.close(timeout=5.0)
