"""The service: opens the store, assembles every domain's workers and routes, runs them under the
supervisor until SIGTERM/SIGINT, then drains and closes."""

from __future__ import annotations

import asyncio
import dataclasses
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
from pantau import auth, db, http, instance, metrics
from pantau.context import ServiceContext
from pantau.db import DatabaseState
from pantau.errors import DatabaseUnavailable, MigrationError, PantauError
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
    app: FastAPI | None = None  # what it serves (its routes), for tests and tools


async def run(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    on_started: Callable[[Started], None] | None = None,
    extra_workers: Sequence[Worker] = (),
) -> None:
    """Run Pantau until `stop` is set or SIGTERM/SIGINT arrives.

    The database need not be up: HTTP and ingestion (which spools) start at once, the database
    worker migrates as soon as PostgreSQL is reachable, and the workers that need the schema
    start then."""
    instance.check_writable(settings)
    if untrusted := instance.untrusted_client_id(settings):
        log.warning("%s", untrusted)
    stop = stop or asyncio.Event()
    registry = metrics.build_registry()
    readiness = Readiness()
    sock = http.bind(settings.http)
    state = DatabaseState()
    fatal: list[PantauError] = []
    try:
        # The common case keeps the old order: migrated before any worker starts. Only when the
        # database cannot be reached now does the database worker migrate later.
        try:
            await _prepare_schema(settings, state)
        except (DatabaseUnavailable, psycopg.OperationalError, psycopg.InterfaceError) as exc:
            _down(state, _reason(exc))
        async with db.open_pool(settings.database) as pool:
            ctx = ServiceContext(settings, pool, registry, readiness, state)
            readiness.add("database", _database_check(pool, state, registry))
            app = http.build_app(
                registry, readiness, [auth.router], max_body_bytes=settings.http.max_body_bytes
            )
            app.state.pool = pool
            app.state.settings = settings
            for domain in DOMAINS:
                domain.setup_app(app, ctx)
            workers = [
                http.http_worker(app, sock, settings.http.trusted_proxies()),
                database_worker(pool, settings, state, registry, stop, fatal),
                storage_worker(pool, settings.storage),
                *(w for domain in DOMAINS for w in domain.workers(ctx)),
            ]
            workers = [_when_usable(w, state) if w.needs_database else w for w in workers]
            supervisor = Supervisor(
                [*workers, *extra_workers],
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
                if warning := auth.cleartext_warning(settings.http):
                    log.warning("%s", warning)
                if on_started:
                    on_started(Started(f"http://{shown}:{port}", app))
                await supervisor.run(stop)
            log.info("all workers stopped")
    finally:
        sock.close()
    if fatal:
        raise fatal[0]


def _when_usable(worker: Worker, state: DatabaseState) -> Worker:
    """The worker, started (and restarted) only while the database is reachable and migrated, so
    it waits instead of failing in a loop while the database is down."""

    async def run(stop: asyncio.Event) -> None:
        if await state.wait_usable(stop):
            await worker.run(stop)

    return dataclasses.replace(worker, run=run)


def database_worker(
    pool: AsyncConnectionPool,
    settings: Settings,
    state: DatabaseState,
    registry: CollectorRegistry,
    stop_service: asyncio.Event,
    fatal: list[PantauError],
) -> Worker:
    """Reaches the database (again and again while it is down, with backoff), applies pending
    migrations the first time it is reached, then marks the schema ready; keeps checking it."""
    # Read from the state at each scrape: /metrics never disagrees with /readyz, not even in the
    # moment between the schema made ready and this loop's next turn.
    metrics.database_up(registry).set_function(lambda: 1 if state.up else 0)
    metrics.database_schema_ready(registry).set_function(lambda: 1 if state.schema_ready() else 0)
    backoff = Backoff(0.5, settings.database.retry_max_seconds)

    async def run(stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            was_up = state.up
            try:
                if not state.schema_ready():
                    await _prepare_schema(settings, state)
                else:
                    await _probe(pool, settings)
            except MigrationError as exc:
                log.error("%s", exc)
                fatal.append(exc)
                stop_service.set()
                return
            except (DatabaseUnavailable, psycopg.OperationalError, psycopg.InterfaceError) as exc:
                _down(state, _reason(exc))
            else:
                state.mark_up()
                if not was_up:
                    log.info("database %s reachable again", settings.database.redacted_url())
            failures = 0 if state.usable else failures + 1
            delay = backoff.delay(failures - 1) if failures else backoff.maximum
            try:
                async with asyncio.timeout(delay):
                    await stop.wait()
            except TimeoutError:
                pass

    return Worker("database", run, needs_database=False)


async def _prepare_schema(settings: Settings, state: DatabaseState) -> None:
    """Migrate (when `migrate_on_start`) and mark the schema ready once nothing is pending: the
    workers write only into the schema they were made for."""
    async with await db.connect(settings.database, autocommit=True) as conn:
        state.mark_up()
        if settings.database.migrate_on_start:
            state.reason = "migrating"
            applied = await migrate(conn, settings.storage.backend)
            if applied:
                log.info(
                    "applied %d migrations: %s",
                    len(applied),
                    ", ".join(f"{m.version:04d}_{m.name}" for m in applied),
                )
        todo = await pending(conn)
        flavor = await current_flavor(conn)
    if todo:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in todo)
        reason = f"migrations pending: {names} (run `pantau db migrate`)"
        if state.reason != reason:
            log.warning("%s; ingestion spools until then", reason)
        state.reason = reason
        return
    state.mark_schema_ready()
    log.info("database schema ready (%s storage)", flavor)


async def _probe(pool: AsyncConnectionPool, settings: Settings) -> None:
    try:
        async with pool.connection(timeout=settings.database.connect_timeout_seconds) as conn:
            await conn.execute("SELECT 1")
    except PoolTimeout as exc:
        raise DatabaseUnavailable(
            f"no connection to {settings.database.redacted_url()} within "
            f"{settings.database.connect_timeout_seconds:g}s"
        ) from exc


def _reason(exc: Exception) -> str:
    if isinstance(exc, DatabaseUnavailable):
        return str(exc)
    return "lost the database: " + " ".join(str(exc).split())


def _down(state: DatabaseState, reason: str) -> None:
    if state.up or state.reason != reason:
        log.warning("database down (%s); readings are spooled until it returns", reason)
    state.mark_down(reason)


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


DOWN = "down (spooling)"


def _database_check(
    pool: AsyncConnectionPool, state: DatabaseState, registry: CollectorRegistry
) -> Check:
    async def check() -> str | None:
        if not state.up:
            return DOWN
        try:
            async with pool.connection(timeout=1.5) as conn:
                todo = await pending(conn)
        except (psycopg.Error, PoolTimeout):
            return DOWN
        if todo:
            names = ", ".join(f"{m.version:04d}_{m.name}" for m in todo)
            return f"migrations pending: {names} (run `pantau db migrate`)"
        if not state.schema_ready():
            return state.reason
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
            async with pool.connection() as conn:
                await storage.refresh_late(conn, datetime.now(UTC))
            try:
                async with asyncio.timeout(settings.rollup_refresh_seconds):
                    await stop.wait()
            except TimeoutError:
                pass

    return Worker("storage", run)
