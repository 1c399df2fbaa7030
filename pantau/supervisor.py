"""Runs the workers of every domain in one TaskGroup, restarts a failed one with backoff and
jitter, and on shutdown lets them drain against a deadline."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from pantau.errors import PantauError

log = logging.getLogger(__name__)


class WorkerGaveUp(PantauError):
    """A worker failed more times in a row than it allows; the service stops."""


@dataclass(frozen=True)
class Worker:
    """A long-running job. `run(stop)` works until `stop` is set, then drains and returns."""

    name: str
    run: Callable[[asyncio.Event], Awaitable[None]]
    # Consecutive failures after which the whole service stops; None = keep restarting.
    give_up_after: int | None = None
    # False: runs while the database is down or not migrated yet (the service starts the others
    # only once it is reachable with its schema ready).
    needs_database: bool = True


@dataclass(frozen=True)
class Backoff:
    initial: float = 0.5
    maximum: float = 30.0
    # A worker that ran this long before failing starts its backoff over.
    healthy_after: float = 60.0

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Equal jitter: half the capped exponential delay plus a random share of the other half."""
        cap = min(self.maximum, self.initial * 2.0**attempt)
        return cap / 2 + rand() * cap / 2


class Supervisor:
    def __init__(
        self,
        workers: Sequence[Worker],
        *,
        registry: CollectorRegistry,
        backoff: Backoff,
        shutdown_timeout: float,
    ) -> None:
        names = [w.name for w in workers]
        if len(set(names)) != len(names):
            raise ValueError(f"worker names must be unique: {names}")
        self._workers = list(workers)
        self._gave_up: WorkerGaveUp | None = None
        self._backoff = backoff
        self._shutdown_timeout = shutdown_timeout
        self._restarts = Counter(
            "pantau_worker_restarts_total",
            "Times a worker was restarted after failing or returning early",
            ["worker"],
            registry=registry,
        )
        self._up = Gauge(
            "pantau_worker_up", "1 while a worker is running", ["worker"], registry=registry
        )
        for name in names:
            self._restarts.labels(name)
            self._up.labels(name).set(0)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then give workers `shutdown_timeout` seconds to drain."""
        async with asyncio.TaskGroup() as group:
            tasks = {
                group.create_task(self._keep(worker, stop), name=f"worker:{worker.name}"): worker
                for worker in self._workers
            }
            await stop.wait()
            log.info("stopping %d workers (deadline %.1fs)", len(tasks), self._shutdown_timeout)
            _, late = await asyncio.wait(tasks, timeout=self._shutdown_timeout)
            for task in late:
                log.warning(
                    "worker %s did not stop within %.1fs; cancelling it",
                    tasks[task].name,
                    self._shutdown_timeout,
                )
                task.cancel()
        if self._gave_up is not None:
            raise self._gave_up

    async def _keep(self, worker: Worker, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while not stop.is_set():
            started = loop.time()
            self._up.labels(worker.name).set(1)
            try:
                await worker.run(stop)
            except Exception:
                if stop.is_set():
                    log.exception("worker %s failed while stopping", worker.name)
                    return
                log.exception("worker %s failed", worker.name)
            else:
                if stop.is_set():
                    return
                log.warning("worker %s returned before shutdown", worker.name)
            finally:
                self._up.labels(worker.name).set(0)
            failures = 1 if loop.time() - started >= self._backoff.healthy_after else failures + 1
            if worker.give_up_after is not None and failures >= worker.give_up_after:
                log.error("worker %s failed %d times in a row; stopping", worker.name, failures)
                self._gave_up = WorkerGaveUp(
                    f"worker {worker.name} failed {failures} times in a row"
                )
                stop.set()  # the others drain as on SIGTERM
                return
            delay = self._backoff.delay(failures - 1)
            log.warning("restarting worker %s in %.1fs", worker.name, delay)
            self._restarts.labels(worker.name).inc()
            try:
                async with asyncio.timeout(delay):
                    await stop.wait()
            except TimeoutError:
                continue
