import asyncio
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from pantau.supervisor import Backoff, Supervisor, Worker, WorkerGaveUp

FAST = Backoff(initial=0.01, maximum=0.05)


def supervisor(
    workers: list[Worker], registry: CollectorRegistry, timeout: float = 2.0
) -> Supervisor:
    return Supervisor(workers, registry=registry, backoff=FAST, shutdown_timeout=timeout)


async def test_failed_worker_is_restarted_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    stop = asyncio.Event()
    runs = 0

    async def flaky(stop_: asyncio.Event) -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"sensor gateway unreachable (attempt {runs})")
        stop.set()
        await stop_.wait()

    with caplog.at_level(logging.WARNING):
        await asyncio.wait_for(supervisor([Worker("flaky", flaky)], registry).run(stop), 5)
    assert runs == 3
    assert registry.get_sample_value("pantau_worker_restarts_total", {"worker": "flaky"}) == 2
    assert "sensor gateway unreachable (attempt 1)" in caplog.text
    assert "restarting worker flaky" in caplog.text


async def test_worker_returning_early_is_restarted() -> None:
    registry = CollectorRegistry()
    stop = asyncio.Event()
    runs = 0

    async def quitter(stop_: asyncio.Event) -> None:
        nonlocal runs
        runs += 1
        if runs == 2:
            stop.set()

    await asyncio.wait_for(supervisor([Worker("quitter", quitter)], registry).run(stop), 5)
    assert runs == 2


async def test_stop_lets_workers_drain() -> None:
    registry = CollectorRegistry()
    stop = asyncio.Event()
    drained: list[str] = []
    started = asyncio.Event()

    async def writer(stop_: asyncio.Event) -> None:
        started.set()
        await stop_.wait()
        await asyncio.sleep(0.1)  # flushing the last batch
        drained.append("writer")

    task = asyncio.create_task(supervisor([Worker("writer", writer)], registry).run(stop))
    await started.wait()
    assert registry.get_sample_value("pantau_worker_up", {"worker": "writer"}) == 1
    stop.set()
    await asyncio.wait_for(task, 5)
    assert drained == ["writer"]
    assert registry.get_sample_value("pantau_worker_up", {"worker": "writer"}) == 0


async def test_worker_ignoring_stop_is_cancelled_at_the_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    stop = asyncio.Event()
    cancelled = asyncio.Event()

    async def stubborn(stop_: asyncio.Event) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def polite(stop_: asyncio.Event) -> None:
        await stop_.wait()

    sup = supervisor([Worker("stubborn", stubborn), Worker("polite", polite)], registry, 0.2)
    task = asyncio.create_task(sup.run(stop))
    await asyncio.sleep(0.05)
    stop.set()
    with caplog.at_level(logging.WARNING):
        await asyncio.wait_for(task, 5)
    assert cancelled.is_set()
    assert "worker stubborn did not stop within 0.2s" in caplog.text
    assert "polite" not in caplog.text


async def test_give_up_stops_everyone_after_draining() -> None:
    registry = CollectorRegistry()
    stop = asyncio.Event()
    drained = []

    async def broken(stop_: asyncio.Event) -> None:
        raise OSError("address in use")

    async def other(stop_: asyncio.Event) -> None:
        await stop_.wait()
        drained.append("other")

    sup = supervisor([Worker("broken", broken, give_up_after=3), Worker("other", other)], registry)
    with pytest.raises(WorkerGaveUp, match="broken failed 3 times"):
        await asyncio.wait_for(sup.run(stop), 5)
    assert drained == ["other"]
    assert registry.get_sample_value("pantau_worker_restarts_total", {"worker": "broken"}) == 2


def test_worker_names_must_be_unique() -> None:
    async def w(stop: asyncio.Event) -> None: ...

    with pytest.raises(ValueError, match="unique"):
        supervisor([Worker("a", w), Worker("a", w)], CollectorRegistry())


@given(
    attempt=st.integers(min_value=0, max_value=200),
    rand=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_backoff_grows_capped_and_jittered(attempt: int, rand: float) -> None:
    backoff = Backoff(initial=0.5, maximum=30.0)
    cap = min(30.0, 0.5 * 2**attempt)
    delay = backoff.delay(attempt, lambda: rand)
    assert cap / 2 <= delay <= cap
    assert delay <= 30.0
