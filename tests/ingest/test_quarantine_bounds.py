"""The quarantine cannot fill the disk, with a real `pantau run`, Mosquitto and PostgreSQL: a
device flooding malformed payloads leaves at most the hourly cap whole plus one summary row while
other devices' readings flow on without added lag; a payload above Pantau's limit but below the
broker's is quarantined by its head; one above the broker's never reaches Pantau."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import psycopg
import pytest

from pantau.embedded import MESSAGE_SIZE_LIMIT, MosquittoBroker, PostgresCluster
from tests.fixtures.mqtt import Publisher
from tests.fixtures.pantau_proc import PantauProcess, ingest_env, wait_for
from tests.fixtures.servers import run_pantau

FLOOD = 10_000
CAP = 100  # ingest.quarantine_max_per_source_hour, its default


@pytest.fixture
def stack(
    private_postgres: PostgresCluster,
    mosquitto_factory: Callable[[], MosquittoBroker],
    tmp_path: Path,
) -> Iterator[tuple[PantauProcess, PostgresCluster, MosquittoBroker]]:
    broker = mosquitto_factory()
    pantau = PantauProcess(
        ingest_env(
            private_postgres,
            broker,
            tmp_path / "spool",
            "flood",
        ),
        tmp_path,
    )
    pantau.start()
    pantau.wait_ready()
    try:
        yield pantau, private_postgres, broker
    finally:
        pantau.stop()


class Steady:
    """A well-behaved sensor publishing every 0.1 s; a poller notes when each reading is stored,
    so `lags` is publish-to-stored time per reading."""

    def __init__(self, broker: int, dsn: str) -> None:
        self._publisher = Publisher(broker)
        self._dsn = dsn
        self._sent: dict[int, float] = {}
        self.lags: dict[int, float] = {}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._publish, daemon=True),
            threading.Thread(target=self._poll, daemon=True),
        ]

    def __enter__(self) -> Steady:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)
        self._publisher.close()

    @property
    def sent(self) -> int:
        return len(self._sent)

    def _publish(self) -> None:
        n = 0
        while not self._stop.wait(0.1):
            now = time.time()
            doc = {"ts": int(now * 1000), "readings": {"pm25": n}}
            self._sent[n] = now
            self._publisher.publish([("bekasi-json/setu/aq-steady", orjson.dumps(doc))])
            n += 1

    def _poll(self) -> None:
        with psycopg.connect(self._dsn, autocommit=True) as conn:
            seen = -1
            while not self._stop.wait(0.05):
                rows = conn.execute(
                    "SELECT value FROM readings WHERE device_id = 'aq-steady' AND value > %s",
                    (seen,),
                ).fetchall()
                now = time.time()
                for (value,) in rows:
                    n = int(value)
                    self.lags[n] = now - self._sent[n]
                    seen = max(seen, n)

    def lags_between(self, first: int, last: int) -> list[float]:
        return [self.lags[n] for n in range(first, last) if n in self.lags]


def test_a_flooding_device_leaves_the_cap_and_one_summary_and_others_flow_on(
    stack: tuple[PantauProcess, PostgresCluster, MosquittoBroker], tmp_path: Path
) -> None:
    pantau, cluster, broker = stack
    with Steady(broker.port, cluster.dsn()) as steady:
        wait_for("a baseline of steady readings", lambda: len(steady.lags) >= 20)
        before = steady.sent
        flood = Publisher(broker.port)
        started = time.monotonic()
        for i in range(FLOOD):  # within a minute, paced at ~400/s
            flood.publish([("bekasi/setu/wl-flood/level", f"not a number #{i}")])
            delay = started + (i + 1) / 400 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        flood.close()
        during = steady.sent
        assert time.monotonic() - started < 60

        def counted() -> object:
            with psycopg.connect(cluster.dsn()) as conn:
                row = conn.execute(
                    "SELECT coalesce(sum(kept + summarised), 0) FROM quarantine_hourly"
                    " WHERE source = 'wl-flood'"
                ).fetchone()
            return (row is not None and row[0] == FLOOD) or row

        wait_for("every flooded payload kept or counted", counted)
        wait_for(
            "the steady readings sent during the flood stored",
            lambda: all(n in steady.lags for n in range(before, during)),
        )

    baseline = steady.lags_between(0, before)
    flooded = steady.lags_between(before, during)
    third = len(flooded) // 3
    early, late = flooded[:third], flooded[-third:]
    print(  # the figures behind the bounds, for `pytest -s`
        f"lag of a steady device's readings, median s: before the flood "
        f"{statistics.median(baseline):.3f}, flood's first third {statistics.median(early):.3f},"
        f" last third {statistics.median(late):.3f}, max during the flood {max(flooded):.3f}"
    )
    # Noisy shared machine: generous bounds, but a backlog behind the flood would grow by the
    # second and break them.
    assert statistics.median(late) < statistics.median(early) + 1.0, (early, late)
    assert statistics.median(flooded) < statistics.median(baseline) + 1.0, (baseline, flooded)
    assert max(flooded) < 5.0, flooded

    with psycopg.connect(cluster.dsn()) as conn:
        hours = conn.execute(
            "SELECT kept, summarised, reasons FROM quarantine_hourly WHERE source = 'wl-flood'"
        ).fetchall()
        whole = conn.execute("SELECT count(*) FROM quarantine WHERE source = 'wl-flood'").fetchone()
    # One summary row per hour the flood touched (two when it straddled an hour).
    assert 1 <= len(hours) <= 2
    assert whole == (sum(h[0] for h in hours),)
    assert all(h[0] == CAP for h in hours) or sum(h[0] for h in hours) <= CAP * len(hours)
    summarised = sum(h[1] for h in hours)
    assert summarised == FLOOD - whole[0]
    assert {r for h in hours for r in h[2]} == {"malformed_payload"}
    assert (
        pantau.metric('pantau_ingest_quarantine_summarised_total{reason="malformed_payload"}')
        == summarised
    )
    assert pantau.metric('pantau_worker_restarts_total{worker="ingest"}') == 0

    listed = run_pantau("quarantine", "list", "--limit", "5", db=cluster.dsn(), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "more payloads from wl-flood (malformed_payload: " in listed.stdout
    assert f"{summarised:,} more only counted" in listed.stdout


def test_payload_limits_of_pantau_and_the_broker(
    stack: tuple[PantauProcess, PostgresCluster, MosquittoBroker],
) -> None:
    pantau, cluster, broker = stack
    between = b'{"readings":{"pm25":1},"pad":"' + b"x" * 300_000 + b'"}'
    assert 256 * 1024 < len(between) < MESSAGE_SIZE_LIMIT
    absurd = b"\xff\xd8" + b"j" * 20_000_000  # a camera's JPEG on a sensor topic
    publisher = Publisher(broker.port)
    try:
        publisher.wait(publisher.publish([("bekasi-json/setu/aq-between", between)]))
        publisher.wait(publisher.publish([("bekasi-json/setu/aq-absurd", absurd)]))
        publisher.wait(
            publisher.publish([("bekasi-json/setu/aq-after", b'{"readings":{"pm25":3}}')])
        )
    finally:
        publisher.close()

    def after_stored() -> object:
        with psycopg.connect(cluster.dsn()) as conn:
            return conn.execute(
                "SELECT count(*) FROM readings WHERE device_id = 'aq-after'"
            ).fetchone() == (1,)

    wait_for("the message after the big ones stored", after_stored)
    with psycopg.connect(cluster.dsn()) as conn:
        rows = conn.execute(
            "SELECT topic, reason, octet_length(payload), payload_size, detail FROM quarantine"
        ).fetchall()
        readings = conn.execute(
            "SELECT count(*) FROM readings WHERE device_id LIKE 'aq-%' AND device_id <> 'aq-after'"
        ).fetchone()
    # The absurd one never reached Pantau: the broker dropped it (message_size_limit).
    assert [r[:4] for r in rows] == [
        ("bekasi-json/setu/aq-between", "payload_too_large", 4096, len(between))
    ]
    assert f"payload of {len(between):,} bytes" in rows[0][4]
    assert readings == (0,)
    assert (
        pantau.metric('pantau_ingest_messages_quarantined_total{reason="payload_too_large"}') == 1
    )
