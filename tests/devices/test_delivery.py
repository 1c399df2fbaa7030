"""Alert delivery against a real Alertmanager (Debian prometheus-alertmanager, started here on a
free port) that notifies a local HTTP server, and against a webhook receiver that fails: the
outbox's events arrive once, resolve, survive a restart of the worker, and are signed."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client import CollectorRegistry

from devices import registry
from devices.models import DeviceIn
from devices.outages.delivery import DeliveryMetrics, run_delivery, sign, verify
from devices.outages.detector import Detector
from devices.outages.settings import OutagesSettings, WebhookSettings
from pantau.embedded import MosquittoBroker, PostgresCluster, free_port
from tests.fixtures.outages import arrive, register
from tests.fixtures.pantau_proc import PantauProcess, ingest_env

ALERTMANAGER = Path("/usr/bin/prometheus-alertmanager")
AMTOOL = Path("/usr/bin/amtool")
DEPLOY = Path(__file__).parents[2] / "deploy" / "alertmanager"


@dataclass
class Receiver:
    """A local HTTP server that records every POST and answers with the queued status codes
    (then 200)."""

    url: str
    answers: list[int] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def seen(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["path"] == path]


@contextmanager
def receiver_server() -> Iterator[Receiver]:
    port = free_port()
    receiver = Receiver(f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with receiver.lock:
                status = receiver.answers.pop(0) if receiver.answers else 200
                receiver.requests.append(
                    {
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": body,
                        "status": status,
                    }
                )
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def notified() -> Iterator[Receiver]:
    with receiver_server() as receiver:
        yield receiver


@dataclass(frozen=True)
class Alertmanager:
    url: str
    notified: Receiver

    def notifications(self) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.notified.seen("/am")]


@pytest.fixture
def alertmanager(notified: Receiver) -> Iterator[Alertmanager]:
    """A real Alertmanager on a free port, notifying `notified` at /am (group_wait 1 s), with
    Pantau's inhibition rule: an area outage mutes its kecamatan's device alerts."""
    if not ALERTMANAGER.exists():
        pytest.fail(f"{ALERTMANAGER} missing: install Debian prometheus-alertmanager")
    base = Path(tempfile.mkdtemp(prefix="pantau-am-"))
    port = free_port()
    config = base / "alertmanager.yml"
    config.write_text(
        f"""
route:
  receiver: test
  group_by: [alertname, kecamatan]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
inhibit_rules:
  - source_matchers: ['alertname="PantauAreaOutage"']
    target_matchers: ['alertname="PantauDeviceDown"']
    equal: [kecamatan]
receivers:
  - name: test
    webhook_configs:
      - url: {notified.url}/am
        send_resolved: true
"""
    )
    log_file = (base / "alertmanager.log").open("wb")
    proc = subprocess.Popen(
        [
            str(ALERTMANAGER),
            f"--config.file={config}",
            f"--storage.path={base / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log_file,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (base / "alertmanager.log").read_text()[-2000:]
                pytest.fail(f"alertmanager did not become ready: {log}")
            time.sleep(0.1)
        yield Alertmanager(url, notified)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()
        shutil.rmtree(base, ignore_errors=True)


async def until(
    what: str,
    check: Callable[[], Awaitable[object]],
    task: asyncio.Task[None] | None = None,
    within: float = 45,
) -> None:
    """Poll `check` until it returns True; fail with the last thing it returned (or with the
    worker's error when `task` ended)."""
    deadline = time.monotonic() + within
    seen: object = None
    while time.monotonic() < deadline:
        if task is not None and task.done():
            task.result()
            raise AssertionError(f"{what}: the delivery worker stopped")
        try:
            seen = await check()
        except httpx.TransportError as exc:
            seen = exc
        if seen is True:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what}: not within {within}s (last seen: {seen!r})")


@dataclass
class Worker:
    task: asyncio.Task[None]
    metrics: DeliveryMetrics
    registry: CollectorRegistry

    def count(self, receiver: str, result: str) -> float:
        value = self.registry.get_sample_value(
            "pantau_alert_deliveries_total", {"receiver": receiver, "result": result}
        )
        return value or 0.0


@asynccontextmanager
async def delivering(db: str, settings: OutagesSettings) -> AsyncIterator[Worker]:
    """The delivery worker as the service runs it, stopped (and awaited) at the end."""
    reg = CollectorRegistry()
    metrics = DeliveryMetrics(reg, settings.receivers())
    stop = asyncio.Event()

    async def connect() -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(db, autocommit=True)

    task = asyncio.create_task(run_delivery(connect, settings, metrics, stop))
    try:
        yield Worker(task, metrics, reg)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def _add(conn: psycopg.AsyncConnection, device_id: str, kecamatan: str = "setu") -> None:
    await register(conn, device_id, kecamatan, name=f"Sensor {device_id}")


async def _outbox(conn: psycopg.AsyncConnection) -> list[tuple[str, str, str, int]]:
    cur = await conn.execute(
        "SELECT event, receiver, status, attempts FROM alert_outbox ORDER BY id"
    )
    return await cur.fetchall()  # type: ignore[return-value]


async def _am_alerts(am: Alertmanager) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{am.url}/api/v2/alerts", timeout=5)
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]


def _notified_alerts(am: Alertmanager, status: str, **labels: str) -> list[dict[str, Any]]:
    """Alerts of `status` in the notifications Alertmanager sent, matching `labels`."""
    return [
        a
        for n in am.notifications()
        for a in n["alerts"]
        if a["status"] == status and all(a["labels"].get(k) == v for k, v in labels.items())
    ]


# Arrivals and passes in the past, so that ended_at (endsAt) is in the past for Alertmanager.
BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def at(seconds: float) -> datetime:
    return BASE + timedelta(seconds=seconds)


async def test_a_device_outage_reaches_alertmanager_once_and_resolves_after_a_restart(
    migrated_db: str, alertmanager: Alertmanager
) -> None:
    settings = OutagesSettings(alertmanager_urls=[alertmanager.url], alertmanager_resend_seconds=5)
    detector = Detector(settings)
    async with await psycopg.AsyncConnection.connect(migrated_db, autocommit=True) as conn:
        await _add(conn, "wl-setu-01")
        await arrive(conn, "wl-setu-01", at(0))
        assert (await detector.run_pass(conn, at(250))).opened == 1

        async with delivering(migrated_db, settings) as worker:

            async def active() -> object:
                alerts = [a for a in await _am_alerts(alertmanager) if a["labels"].get("device")]
                return len(alerts) == 1 or alerts

            await until("the alert is active in Alertmanager", active, worker.task)
            [am_alert] = await _am_alerts(alertmanager)
            labels = am_alert["labels"]
            assert labels == {
                "alertname": "PantauDeviceDown",
                "device": "wl-setu-01",
                "type": "water_level",
                "kecamatan": "Setu",
                "pillar": labels["pillar"],
                "severity": "warning",
                "cause": "silent",
            }
            assert re.fullmatch(
                # the time alone when the outage began today (WIB), else with its date: the
                # test's clock may cross midnight WIB (17.00 UTC) between the two
                r"Perangkat wl-setu-01 mati sejak (\d\d/\d\d/\d{4} )?\d\d:\d\d WIB "
                r"\(tidak mengirim data\), "
                r"Kecamatan Setu",
                am_alert["annotations"]["summary_id"],
            ), am_alert["annotations"]
            assert datetime.fromisoformat(am_alert["startsAt"]) == at(60)
            lease = datetime.fromisoformat(am_alert["endsAt"]) - datetime.now(UTC)
            assert timedelta(seconds=15) < lease <= timedelta(seconds=20)

            async def notified_firing() -> object:
                return len(_notified_alerts(alertmanager, "firing", device="wl-setu-01")) == 1

            await until("Alertmanager notifies the outage", notified_firing, worker.task)
            first_ends = am_alert["endsAt"]

            async def lease_renewed() -> object:
                [a] = await _am_alerts(alertmanager)
                return a["endsAt"] > first_ends or a["endsAt"]

            await until("the active alert is re-sent with a new lease", lease_renewed, worker.task)
            assert worker.count("alertmanager", "delivered") == 1
        assert await _outbox(conn) == [("raised", "alertmanager", "delivered", 1)]

        # The device reports again while no worker runs; a new worker resolves the alert.
        for t in (300, 360, 420, 480):
            await arrive(conn, "wl-setu-01", at(t))
            await detector.run_pass(conn, at(t + 5))
        assert [e for e, *_ in await _outbox(conn)] == ["raised", "resolved"]

        async with delivering(migrated_db, settings) as worker:

            async def resolved() -> object:
                return len(_notified_alerts(alertmanager, "resolved", device="wl-setu-01")) == 1

            await until("Alertmanager notifies the resolution", resolved, worker.task)
            assert await _am_alerts(alertmanager) == []
            [gone] = _notified_alerts(alertmanager, "resolved", device="wl-setu-01")
            assert datetime.fromisoformat(gone["endsAt"]) == at(300)
        assert await _outbox(conn) == [
            ("raised", "alertmanager", "delivered", 1),
            ("resolved", "alertmanager", "delivered", 1),
        ]
        assert len(_notified_alerts(alertmanager, "firing", device="wl-setu-01")) == 1


async def test_a_webhook_that_fails_twice_gets_one_signed_delivery(
    migrated_db: str, notified: Receiver
) -> None:
    secret = "kunci-rahasia-webhook"
    notified.answers = [500, 500]
    settings = OutagesSettings(
        webhooks=[WebhookSettings(name="hook", url=f"{notified.url}/hook", secret=secret)],  # type: ignore[arg-type]
        delivery_max_backoff_seconds=2,
    )
    detector = Detector(settings)
    async with await psycopg.AsyncConnection.connect(migrated_db, autocommit=True) as conn:
        await _add(conn, "wl-setu-05")
        await arrive(conn, "wl-setu-05", at(0))
        await detector.run_pass(conn, at(250))
        async with delivering(migrated_db, settings) as worker:

            async def delivered() -> object:
                rows = await _outbox(conn)
                return rows == [("raised", "hook", "delivered", 3)] or rows

            await until("the webhook event is delivered", delivered, worker.task)
            assert worker.count("hook", "failed") == 2
            assert worker.count("hook", "delivered") == 1
        cur = await conn.execute("SELECT event_id, last_error FROM alert_outbox")
        event_id, last_error = await cur.fetchone()  # type: ignore[misc]
        assert last_error is None

    requests = notified.seen("/hook")
    assert [r["status"] for r in requests] == [500, 500, 200]
    assert {r["headers"]["X-Pantau-Event-Id"] for r in requests} == {str(event_id)}
    [ok] = [r for r in requests if r["status"] == 200]
    body, headers = ok["body"], ok["headers"]
    assert verify(secret, headers["X-Pantau-Timestamp"], body, headers["X-Pantau-Signature"])
    assert headers["X-Pantau-Signature"] == sign(secret, int(headers["X-Pantau-Timestamp"]), body)
    event = json.loads(body)
    assert event["event_id"] == str(event_id)
    assert event["event"] == "raised"
    assert event["outage"]["device_id"] == "wl-setu-05"
    assert event["outage"]["device_name"] == "Sensor wl-setu-05"
    assert event["outage"]["kecamatan_name"] == "Setu"
    assert event["outage"]["summary_id"].startswith("Perangkat wl-setu-05 mati sejak ")
    # A receiver rejects a tampered body, another secret, and a replay after 5 minutes.
    stamp = headers["X-Pantau-Timestamp"]
    assert not verify(secret, stamp, body + b" ", headers["X-Pantau-Signature"])
    assert not verify("other", stamp, body, headers["X-Pantau-Signature"])
    later = int(stamp) + 301
    assert not verify(secret, stamp, body, headers["X-Pantau-Signature"], now=later)
    assert secret not in body.decode()


async def test_an_area_outage_is_one_notification_and_inhibits_its_devices(
    migrated_db: str, alertmanager: Alertmanager
) -> None:
    settings = OutagesSettings(alertmanager_urls=[alertmanager.url], alertmanager_resend_seconds=5)
    detector = Detector(settings)
    devices = ["wl-setu-11", "wl-setu-12", "wl-setu-13", "wl-setu-14"]
    async with await psycopg.AsyncConnection.connect(migrated_db, autocommit=True) as conn:
        for device in devices:
            await _add(conn, device)
        await arrive(conn, devices[0], at(0))
        for device in devices[1:]:
            await arrive(conn, device, at(200))
        assert (await detector.run_pass(conn, at(250))).opened == 1  # the first one alone
        async with delivering(migrated_db, settings) as worker:

            async def first_notified() -> object:
                return len(_notified_alerts(alertmanager, "firing", device=devices[0])) == 1

            await until("the first device's alert is notified", first_notified, worker.task)
            # The three others go down together: the kecamatan is dark.
            result = await detector.run_pass(conn, at(460))
            assert (result.opened, result.areas_opened) == (3, 1)

            async def area_notified() -> object:
                return len(_notified_alerts(alertmanager, "firing", alertname="PantauAreaOutage"))

            await until("the area outage is notified", lambda: _is(area_notified, 1), worker.task)

            async def inhibited() -> object:
                alerts = {
                    a["labels"].get("device", "area"): a["status"]
                    for a in await _am_alerts(alertmanager)
                }
                return (
                    set(alerts) == {"area", devices[0]}
                    and alerts[devices[0]]["state"] == "suppressed"
                    and bool(alerts[devices[0]]["inhibitedBy"])
                ) or alerts

            await until("the device alert is inhibited by the area", inhibited, worker.task)
            [area] = _notified_alerts(alertmanager, "firing", alertname="PantauAreaOutage")
            assert area["labels"]["kecamatan"] == "Setu"
            assert area["labels"]["severity"] == "critical"
            assert "4 dari 4 perangkat mati" in area["annotations"]["summary_id"]
        # Never a notification naming the three grouped devices.
        for device in devices[1:]:
            assert _notified_alerts(alertmanager, "firing", device=device) == []
        assert len(_notified_alerts(alertmanager, "firing", alertname="PantauAreaOutage")) == 1
        statuses = sorted(s for _, _, s, _ in await _outbox(conn))
        assert statuses == ["delivered", "delivered", "grouped", "grouped", "grouped"]


async def _is(check: Callable[[], Awaitable[object]], expected: object) -> object:
    seen = await check()
    return seen == expected or seen


def test_the_shipped_alertmanager_config_checks_and_routes(tmp_path: Path) -> None:
    if not AMTOOL.exists():
        pytest.fail(f"{AMTOOL} missing: install Debian prometheus-alertmanager")
    config = DEPLOY / "alertmanager.yml"
    version = subprocess.run([str(AMTOOL), "--version"], capture_output=True, text=True, check=True)
    found = re.search(r"version (\d+)\.(\d+)", version.stdout + version.stderr)
    assert found is not None
    if (int(found[1]), int(found[2])) < (0, 26):
        # Debian bookworm's amtool (0.25) predates telegram bot_token_file (0.26): check a copy
        # with the token inline; everything else is checked as shipped.
        shutil.copytree(DEPLOY / "templates", tmp_path / "templates")
        text = re.sub(r"bot_token_file: \S+", 'bot_token: "checked"', config.read_text())
        config = tmp_path / "alertmanager.yml"
        config.write_text(text)
    check = subprocess.run(
        [str(AMTOOL), "check-config", str(config)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "1 templates" in check.stdout

    def route(*labels: str) -> str:
        done = subprocess.run(
            [str(AMTOOL), "config", "routes", "test", f"--config.file={config}", *labels],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    area = route("alertname=PantauAreaOutage", "kecamatan=Setu", "severity=critical")
    assert area == "command-center-telegram,supervisor-email"
    coast = route("alertname=PantauDeviceDown", "kecamatan=Babelan", "severity=critical")
    assert coast.startswith("bpbd-telegram,")
    assert route("alertname=PantauDeviceDown", "kecamatan=Setu", "severity=warning") == (
        "command-center-telegram"
    )


async def test_two_instances_give_one_alert(
    private_postgres: PostgresCluster,
    mosquitto: MosquittoBroker,
    alertmanager: Alertmanager,
    tmp_path: Path,
) -> None:
    """Two `pantau run` on one database: one detector judges (advisory lock), the two delivery
    workers share the outbox, and Alertmanager is told once."""
    procs = []
    for name in ("a", "b"):
        workdir = tmp_path / name
        workdir.mkdir()
        env = ingest_env(
            private_postgres,
            mosquitto,
            workdir / "spool",
            name,
            PANTAU_OUTAGES__ALERTMANAGER_URLS=json.dumps([alertmanager.url]),
            PANTAU_OUTAGES__ALERTMANAGER_RESEND_SECONDS="5",
            PANTAU_OUTAGES__DETECTOR_INTERVAL_SECONDS="1",
        )
        procs.append(PantauProcess(env, workdir))
    try:
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.wait_ready(60)
        async with await psycopg.AsyncConnection.connect(
            private_postgres.dsn(), autocommit=True
        ) as conn:
            # Registered, never reporting: down after 4 x 2 s.
            await registry.create_device(
                conn,
                DeviceIn.model_validate(
                    {
                        "device_id": "wl-setu-21",
                        "name": "Sensor wl-setu-21",
                        "device_type": "water_level",
                        "kecamatan": "setu",
                        "expected_interval_seconds": 2,
                    }
                ),
                "test",
            )

            async def notified() -> object:
                return len(_notified_alerts(alertmanager, "firing", device="wl-setu-21")) == 1

            await until("Alertmanager notifies the outage", notified, within=60)
            [am_alert] = await _am_alerts(alertmanager)
            first_ends = am_alert["endsAt"]

            async def renewed() -> object:
                [a] = await _am_alerts(alertmanager)
                return a["endsAt"] > first_ends or a["endsAt"]

            await until("the active alert is re-sent", renewed, within=30)
            assert await _outbox(conn) == [("raised", "alertmanager", "delivered", 1)]
            cur = await conn.execute("SELECT count(*) FROM outages")
            assert await cur.fetchone() == (1,)
        leaders = [p.metric("pantau_outage_detector_leader") for p in procs]
        assert sorted(leaders) == [0, 1]
        assert len(_notified_alerts(alertmanager, "firing", device="wl-setu-21")) == 1
        for proc in procs:
            assert "worker alert-delivery failed" not in proc.log.read_text()
    finally:
        for proc in procs:
            proc.stop()
