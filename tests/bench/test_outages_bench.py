"""Outage detection at scale (issue 9, Performance): 20,000 registered devices (COPY), one
detector pass's database time, an outage's delay after its threshold with the real worker, and
1,000 simultaneous outages (one kecamatan of 1,000 devices goes dark) grouped into one area
outage with its outbox rows. `make bench` runs it; `make test` skips it."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client import CollectorRegistry

from devices.outages.delivery import DeliveryMetrics, run_delivery
from devices.outages.detector import Detector, DetectorMetrics, run_detector
from devices.outages.settings import OutagesSettings
from pantau import migrate
from tests.devices.test_delivery import (  # a real Alertmanager on a free port
    Alertmanager,
    alertmanager,  # noqa: F401 - fixture
    notified,  # noqa: F401 - fixture
)

pytestmark = pytest.mark.bench

DEVICES = 20_000
DARK = "setu"  # the kecamatan of 1,000 devices that goes dark
DARK_DEVICES = 1_000
INTERVAL = 60  # seconds, every device's expected interval
PASSES = 15
SETTINGS = OutagesSettings(alertmanager_urls=["http://127.0.0.1:9"])  # outbox rows are written


async def _connect(url: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(url, autocommit=True)


async def _populate(conn: psycopg.AsyncConnection[Any], received_at: datetime) -> None:
    """20,000 active devices: 1,000 in `DARK`, the others spread over the other kecamatan;
    each has reported at `received_at`."""
    await migrate.migrate(conn, "plain")
    cur = await conn.execute("SELECT id FROM kecamatan WHERE id <> %s ORDER BY id", (DARK,))
    others = [row[0] for row in await cur.fetchall()]
    types = ["water_level", "rain_gauge", "air_quality"]
    rows = []
    for i in range(DEVICES):
        kecamatan = DARK if i < DARK_DEVICES else others[i % len(others)]
        rows.append((f"bench-{i:05d}", f"bench {i}", types[i % 3], kecamatan, "environment"))
    async with (
        conn.cursor() as cur,
        cur.copy(
            "COPY devices (device_id, name, device_type, kecamatan, pillar,"
            " expected_interval_seconds) FROM STDIN"
        ) as copy,
    ):
        for device_id, name, kind, kecamatan, pillar in rows:
            await copy.write_row((device_id, name, kind, kecamatan, pillar, INTERVAL))
    async with (
        conn.cursor() as cur,
        cur.copy(
            "COPY device_last_seen (device_id, last_reading_at, last_received_at) FROM STDIN"
        ) as copy,
    ):
        for device_id, *_ in rows:
            await copy.write_row((device_id, received_at, received_at))
    await conn.execute("ANALYZE")


def _table(title: str, rows: dict[str, str]) -> None:
    print(f"\n{title}\n| measure | result |\n|---|---|")
    for name, value in rows.items():
        print(f"| {name} | {value} |")


async def test_detector_pass_database_time(database_url: str) -> None:
    """Passes at chosen times: steady state (nothing changes), then the pass where 1,000
    devices of one kecamatan go down and their area outage opens, and the pass they recover."""
    t0 = datetime.now(UTC) + timedelta(days=1)
    detector = Detector(SETTINGS)
    async with await _connect(database_url) as conn:
        await _populate(conn, t0)
        started = time.perf_counter()
        await detector.run_pass(conn, t0 + timedelta(seconds=1))
        first = time.perf_counter() - started
        steady = []
        for k in range(PASSES):
            started = time.perf_counter()
            result = await detector.run_pass(conn, t0 + timedelta(seconds=2 + 5 * k))
            steady.append(time.perf_counter() - started)
            assert result.transitions == 0
        # All but `DARK` keep reporting; `DARK` has been silent since t0.
        later = t0 + timedelta(seconds=5 * INTERVAL)
        await conn.execute(
            "UPDATE device_last_seen s SET last_received_at = %s, last_reading_at = %s"
            " FROM devices d WHERE d.device_id = s.device_id AND d.kecamatan <> %s",
            (later, later, DARK),
        )
        started = time.perf_counter()
        dark = await detector.run_pass(conn, later + timedelta(seconds=1))
        dark_seconds = time.perf_counter() - started
        assert dark.opened == DARK_DEVICES
        assert dark.areas_opened == 1
        after = []
        for k in range(5):
            started = time.perf_counter()
            await detector.run_pass(conn, later + timedelta(seconds=6 + 5 * k))
            after.append(time.perf_counter() - started)
        back = later + timedelta(seconds=60)
        await conn.execute(
            "UPDATE device_last_seen SET last_received_at = %s, last_reading_at = %s", (back, back)
        )
        await detector.run_pass(conn, back + timedelta(seconds=1))  # recovering (damped)
        steady_on = back + timedelta(seconds=INTERVAL * 3)
        await conn.execute(
            "UPDATE device_last_seen SET last_received_at = %s, last_reading_at = %s",
            (steady_on, steady_on),
        )
        started = time.perf_counter()
        recovered = await detector.run_pass(conn, back + timedelta(seconds=INTERVAL * 3 + 2))
        recovered_seconds = time.perf_counter() - started
        assert recovered.closed == DARK_DEVICES
        assert recovered.areas_closed == 1
    _table(
        f"Detector pass, {DEVICES:,} devices (wall time of run_pass = its database time)",
        {
            "first pass (creates 20,000 liveness rows)": f"{first * 1000:.0f} ms",
            f"steady pass, median of {PASSES}": f"{statistics.median(steady) * 1000:.0f} ms",
            f"steady pass, worst of {PASSES}": f"{max(steady) * 1000:.0f} ms",
            "pass where 1,000 go down + area outage": f"{dark_seconds * 1000:.0f} ms",
            "passes while 1,000 are down, worst of 5": f"{max(after) * 1000:.0f} ms",
            "pass where 1,000 outages and the area end": f"{recovered_seconds * 1000:.0f} ms",
        },
    )
    assert statistics.median(steady) < 1.0
    assert dark_seconds < 1.0


async def _poll(
    conn: psycopg.AsyncConnection[Any], sql: str, params: tuple[object, ...], deadline: float
) -> float:
    """Poll until `sql` returns true; the wall-clock time (epoch seconds) it first did."""
    while time.time() < deadline:
        cur = await conn.execute(sql, params)
        row = await cur.fetchone()
        if row and row[0]:
            return time.time()
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within the deadline: {sql}")


async def _am_setu(am: Alertmanager) -> list[dict[str, Any]]:
    """The active alerts Alertmanager holds for the dark kecamatan."""
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{am.url}/api/v2/alerts", timeout=5)
        response.raise_for_status()
        return [a for a in response.json() if a["labels"].get("kecamatan") == "Setu"]


async def _until(what: str, check: Callable[[], Awaitable[bool]], deadline: float) -> float:
    while time.time() < deadline:
        if await check():
            return time.time()
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: not within the deadline")


async def test_outages_with_the_real_worker(
    database_url: str,
    alertmanager: Alertmanager,  # noqa: F811 - the fixture imported above
) -> None:
    """The detector worker (interval 5 s) and the delivery worker on 20,000 devices, with a
    real Alertmanager (group_wait 1 s): three devices cross their down threshold at chosen
    moments, then the 1,000 devices of one kecamatan at once."""
    settings = SETTINGS.model_copy(
        update={"detector_interval_seconds": 5.0, "alertmanager_urls": [alertmanager.url]}
    )
    async with await _connect(database_url) as conn:
        await _populate(conn, datetime.now(UTC))
        metrics = DetectorMetrics(CollectorRegistry())
        stop = asyncio.Event()
        worker = asyncio.create_task(
            run_detector(lambda: _connect(database_url), settings, metrics, stop)
        )
        delivery = asyncio.create_task(
            run_delivery(
                lambda: _connect(database_url),
                settings,
                DeliveryMetrics(CollectorRegistry(), settings.receivers()),
                stop,
            )
        )
        try:
            down_after = settings.down_factor * INTERVAL
            delays = []
            for n, lead in enumerate((2.0, 4.5, 7.0)):
                device = f"bench-{DEVICES - 1 - n:05d}"
                threshold = time.time() + lead
                received = datetime.fromtimestamp(threshold - down_after, UTC)
                await conn.execute(
                    "UPDATE device_last_seen SET last_received_at = %s WHERE device_id = %s",
                    (received, device),
                )
                seen = await _poll(
                    conn,
                    "SELECT count(*) > 0 FROM outages WHERE device_id = %s",
                    (device,),
                    threshold + 30,
                )
                delays.append(seen - threshold)
            # Everyone else reports now; `DARK` reaches its threshold in 3 s, all at once.
            await conn.execute(
                "UPDATE device_last_seen SET last_received_at = now()"
                " WHERE device_id NOT LIKE 'bench-199%%'"
            )
            threshold = time.time() + 3
            received = datetime.fromtimestamp(threshold - down_after, UTC)
            await conn.execute(
                "UPDATE device_last_seen s SET last_received_at = %s FROM devices d"
                " WHERE d.device_id = s.device_id AND d.kecamatan = %s",
                (received, DARK),
            )
            area_seen = await _poll(
                conn,
                "SELECT count(*) = 1 FROM outages o JOIN alert_outbox b ON b.outage_id = o.id"
                " WHERE o.kind = 'area' AND o.kecamatan = %s AND b.status <> 'grouped'",
                (DARK,),
                threshold + 30,
            )
            cur = await conn.execute(
                "SELECT count(*) FILTER (WHERE b.status = 'grouped'),"
                "       count(*) FILTER (WHERE b.status = 'pending')"
                " FROM outages o JOIN alert_outbox b ON b.outage_id = o.id"
                " WHERE o.kecamatan = %s AND o.kind = 'device'",
                (DARK,),
            )
            grouped, pending = await cur.fetchone() or (0, 0)

            async def in_alertmanager() -> bool:
                return bool(await _am_setu(alertmanager))

            async def notified_once() -> bool:
                return any(
                    a["labels"].get("kecamatan") == "Setu"
                    for n in alertmanager.notifications()
                    for a in n["alerts"]
                )

            am_seen = await _until(
                "Alertmanager has the area alert", in_alertmanager, area_seen + 30
            )
            am_notified = await _until("Alertmanager notifies it", notified_once, am_seen + 30)
            setu_alerts = await _am_setu(alertmanager)
            setu_notified = [
                a
                for n in alertmanager.notifications()
                for a in n["alerts"]
                if a["labels"].get("kecamatan") == "Setu"
            ]
        finally:
            stop.set()
            for task in (worker, delivery):
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(task, 30)
    passes = metrics.pass_seconds.collect()[0].samples
    count = next(s.value for s in passes if s.name.endswith("_count"))
    total = next(s.value for s in passes if s.name.endswith("_sum"))
    _table(
        f"Real detector worker, interval 5 s, {DEVICES:,} devices",
        {
            "outage raised after its threshold (3 devices)": ", ".join(
                f"{d:.1f} s" for d in delays
            ),
            f"{DARK_DEVICES:,} go dark: area outage + its outbox row, after the threshold": (
                f"{area_seen - threshold:.1f} s"
            ),
            "device outbox rows grouped under it / pending": f"{grouped} / {pending}",
            "... Alertmanager holds the area alert, after the threshold": (
                f"{am_seen - threshold:.1f} s"
            ),
            "... Alertmanager has notified its receiver (group_wait 1 s)": (
                f"{am_notified - threshold:.1f} s"
            ),
            "alerts for the kecamatan in Alertmanager / in the notification": (
                f"{len(setu_alerts)} / {len(setu_notified)}"
            ),
            "worker passes, mean duration": f"{total / count * 1000:.0f} ms over {count:.0f}",
        },
    )
    assert max(delays) < 15
    assert area_seen - threshold < 10
    assert grouped == DARK_DEVICES
    assert pending == 0
    assert am_seen - threshold < 10
    assert len(setu_alerts) == 1
    assert len(setu_notified) == 1
