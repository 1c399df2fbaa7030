"""The service: opens the store, assembles every domain's workers and routes, runs them under the
supervisor until SIGTERM/SIGINT, then drains and closes."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import psycopg
import typer
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from psycopg_pool import AsyncConnectionPool, PoolTimeout

import devices
import grafana
import ingest
import streams
from pantau import auth, db, http, metrics
from pantau.context import ServiceContext
from pantau.errors import PantauError
from pantau.health import Check, Readiness
from pantau.migrate import current_flavor, migrate, pending
from pantau.settings import Settings, StorageSettings
from pantau.storage import MAINTENANCE_LOCK_KEY, storage_for
from pantau.supervisor import Backoff, Supervisor, Worker

log = logging.getLogger(__name__)


class Domain(Protocol):
    def workers(self, ctx: ServiceContext) -> list[Worker]: ...

    def setup_app(self, app: FastAPI, ctx: ServiceContext) -> None: ...

    def register_cli(self, app: typer.Typer) -> None: ...


DOMAINS: tuple[Domain, ...] = (ingest, devices, streams, grafana)


@dataclass(frozen=True)
class Started:
    """Where a started service listens, for the caller to print."""

    http_url: str


async def run(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    on_started: Callable[[Started], None] | None = None,
    extra_workers: Sequence[Worker] = (),
) -> None:
    """Run Pantau until `stop` is set or SIGTERM/SIGINT arrives."""
    stop = stop or asyncio.Event()
    registry = metrics.build_registry()
    readiness = Readiness()
    sock = http.bind(settings.http)
    try:
        async with db.open_pool(settings.database) as pool:
            if settings.database.migrate_on_start:
                async with await db.connect(settings.database, autocommit=True) as conn:
                    applied = await migrate(conn, settings.storage.backend)
                    if applied:
                        log.info("applied %d migrations", len(applied))
            ctx = ServiceContext(settings, pool, registry, readiness)
            readiness.add("database", _database_check(pool, registry))
            app = http.build_app(
                registry, readiness, [auth.router], max_body_bytes=settings.http.max_body_bytes
            )
            app.state.pool = pool
            app.state.settings = settings
            for domain in DOMAINS:
                domain.setup_app(app, ctx)
            workers = [
                http.http_worker(app, sock),
                storage_worker(pool, settings.storage),
                *(w for domain in DOMAINS for w in domain.workers(ctx)),
                *extra_workers,
            ]
            supervisor = Supervisor(
                workers,
                registry=registry,
                backoff=Backoff(
                    settings.service.restart_backoff_initial_seconds,
                    settings.service.restart_backoff_max_seconds,
                ),
                shutdown_timeout=settings.service.shutdown_timeout_seconds,
            )
            with _SignalScope(stop):
                host, port = sock.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                log.info("Pantau listening on http://%s:%d", shown, port)
                if on_started:
                    on_started(Started(f"http://{shown}:{port}"))
                await supervisor.run(stop)
            log.info("all workers stopped")
    finally:
        sock.close()


class _SignalScope:
    """SIGINT/SIGTERM set `stop` while the supervisor runs; a second signal is only logged."""

    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop
        self._loop = asyncio.get_running_loop()

    def __enter__(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._loop.add_signal_handler(sig, self._on_signal, sig)

    def __exit__(self, *exc: object) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stop.is_set():
            log.warning("%s again: still draining, please wait", sig.name)
            return
        log.info("%s received: draining", sig.name)
        self._stop.set()


def _database_check(pool: AsyncConnectionPool, registry: CollectorRegistry) -> Check:
    up = metrics.database_up(registry)

    async def check() -> str | None:
        try:
            async with pool.connection(timeout=1.5) as conn:
                todo = await pending(conn)
        except (psycopg.Error, PoolTimeout) as exc:
            up.set(0)
            return "unreachable: " + " ".join(str(exc).split())
        up.set(1)
        if todo:
            names = ", ".join(f"{m.version:04d}_{m.name}" for m in todo)
            return f"migrations pending: {names} (run `pantau db migrate`)"
        return None

    return check


def storage_worker(pool: AsyncConnectionPool, settings: StorageSettings) -> Worker:
    """Keeps partitions, retention and rollups up to date; one instance at a time does the work."""

    async def run(stop: asyncio.Event) -> None:
        async with pool.connection() as conn:
            flavor = await current_flavor(conn)
        if flavor is None:
            raise PantauError("the database has no Pantau schema yet: run `pantau db migrate`")
        storage = storage_for(flavor, settings)
        loop = asyncio.get_running_loop()
        next_maintenance = 0.0  # the first round applies the retention policy
        first = True
        while not stop.is_set():
            async with pool.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    "SELECT pg_try_advisory_xact_lock(%s)", (MAINTENANCE_LOCK_KEY,)
                )
                row = await cur.fetchone()
                if row and row[0]:
                    now = datetime.now(UTC)
                    if first:
                        await storage.apply_policies(conn)
                        first = False
                        next_maintenance = loop.time() + settings.maintenance_interval_seconds
                    elif loop.time() >= next_maintenance:
                        await storage.maintain(conn, now.date())
                        next_maintenance = loop.time() + settings.maintenance_interval_seconds
                    await storage.refresh_rollups(conn, now)
            try:
                async with asyncio.timeout(settings.rollup_refresh_seconds):
                    await stop.wait()
            except TimeoutError:
                pass

    return Worker("storage", run)
