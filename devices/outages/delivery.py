"""Alert delivery: the worker that sends the outbox's events (alert_outbox rows) to
Alertmanager and to webhooks, and marks each delivered, or retries it with backoff and jitter.

Each round claims the due rows (`FOR UPDATE SKIP LOCKED`, so instances share the outbox and never
send one row at the same time), in id order per outage and receiver (raised before resolved),
sends them while holding their locks, and marks them in the same transaction. A crash between
the send and the commit sends the event again on restart: at least once, with the event's id
as the idempotency key (Alertmanager merges alerts by their labels anyway). Rows are never
deleted: the outbox is the delivery history.

The payload is built at delivery time from the outage row, its device and its kecamatan.
Alertmanager gets every active alert again every `alertmanager_resend_seconds` with an `endsAt`
lease of four such periods, so it never resolves one by timeout; a resolved alert is sent with
its `ended_at` as `endsAt`. The worker wakes at once when a row becomes due (NOTIFY
`pantau_outbox`, from the triggers of migration 0011).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge
from psycopg.rows import dict_row

from devices.outages.detector import _wait_for_news
from devices.outages.settings import OutagesSettings, WebhookSettings
from pantau.cliapp import WIB
from pantau.supervisor import Backoff

log = logging.getLogger(__name__)

CHANNEL = "pantau_outbox"
ALERTMANAGER = "alertmanager"
ALERTMANAGER_TIMEOUT_SECONDS = 10.0
BATCH = 500  # rows claimed per round
RESEND_CHUNK = 1000  # alerts per POST when re-sending the active ones
LEASE_PERIODS = 4  # an active alert's endsAt: now + this many resend periods
REPLAY_WINDOW_SECONDS = 300  # a webhook receiver rejects older timestamps
WEBHOOK_CONCURRENCY = 8
MAX_IDLE_SECONDS = 10.0  # a safety net: the worker looks at the outbox at least this often

ALERTNAMES = {"device": "PantauDeviceDown", "area": "PantauAreaOutage", "alarm": "PantauValueAlarm"}
CAUSES_EN = {
    "silent": "no data",
    "offline": "offline",
    "frozen": "frozen picture",
    "black": "black picture",
    "covered": "covered lens",
}
CAUSES_ID = {
    "silent": "tidak mengirim data",
    "offline": "luring",
    "frozen": "gambar beku",
    "black": "gambar hitam",
    "covered": "lensa tertutup",
}


class DeliveryMetrics:
    def __init__(self, registry: CollectorRegistry, receivers: list[str] | None = None) -> None:
        self.pending = Gauge(
            "pantau_alert_outbox_pending",
            "Alert events in the outbox not delivered yet (due now or waiting for a retry)",
            registry=registry,
        )
        self.deliveries = Counter(
            "pantau_alert_deliveries_total",
            "Attempts to deliver an alert event, by receiver and result (delivered, failed)",
            ["receiver", "result"],
            registry=registry,
        )
        for receiver in receivers or []:
            for result in ("delivered", "failed"):
                self.deliveries.labels(receiver, result)


@dataclass(frozen=True)
class Outcome:
    """What one round did."""

    claimed: int
    delivered: int
    failed: int


_CLAIM = """
SELECT b.id, b.event_id, b.outage_id, b.event, b.receiver, b.attempts
FROM alert_outbox b
WHERE b.status = 'pending' AND b.next_attempt_at <= now()
  AND b.receiver = ANY(%(receivers)s)
  AND NOT EXISTS (
      SELECT 1 FROM alert_outbox e
      WHERE e.outage_id = b.outage_id AND e.receiver = b.receiver
        AND e.status = 'pending' AND e.id < b.id)
ORDER BY b.id
LIMIT %(limit)s
FOR UPDATE OF b SKIP LOCKED
"""

_OUTAGES = """
SELECT o.id, o.kind, o.device_id, d.name AS device_name, o.kecamatan,
       k.name AS kecamatan_name, o.device_type, o.pillar, o.metric, o.level, o.cause,
       o.severity, o.started_at, o.ended_at, o.parent_id, o.detail
FROM outages o
LEFT JOIN devices d ON d.device_id = o.device_id
JOIN kecamatan k ON k.id = o.kecamatan
"""

# Alerts Alertmanager knows of (their raised event reached it) that have not ended.
_ACTIVE = (
    _OUTAGES  # noqa: S608 - constant SQL, no input
    + """
WHERE o.ended_at IS NULL AND EXISTS (
    SELECT 1 FROM alert_outbox b
    WHERE b.outage_id = o.id AND b.receiver = 'alertmanager' AND b.event = 'raised'
      AND b.status = 'delivered')
ORDER BY o.id
"""
)

_DELIVERED = """
UPDATE alert_outbox
SET status = 'delivered', delivered_at = now(), attempts = attempts + 1, last_error = NULL
WHERE id = ANY(%(ids)s)
"""

_FAILED = """
UPDATE alert_outbox b
SET attempts = b.attempts + 1, last_error = f.error,
    next_attempt_at = now() + make_interval(secs => f.delay)
FROM unnest(%(ids)s::bigint[], %(errors)s::text[], %(delays)s::double precision[])
     AS f(id, error, delay)
WHERE b.id = f.id
"""

_NEXT_DUE = """
SELECT count(*), extract(epoch FROM min(next_attempt_at) - now())
FROM alert_outbox WHERE status = 'pending' AND receiver = ANY(%(receivers)s)
"""


def _when(at: datetime, now: datetime) -> str:
    local = at.astimezone(WIB)
    if local.date() == now.astimezone(WIB).date():
        return local.strftime("%H:%M WIB")
    return local.strftime("%d/%m/%Y %H:%M WIB")


def summaries(outage: dict[str, Any], now: datetime) -> tuple[str, str]:
    """The alert's one-line summary in English and in Bahasa Indonesia (times in WIB)."""
    since = _when(outage["started_at"], now)
    kec = outage["kecamatan_name"]
    if outage["kind"] == "area":
        detail = outage["detail"] or {}
        down, total = detail.get("down", "?"), detail.get("total", "?")
        return (
            f"Area outage in {kec}: {down} of {total} devices down since {since}",
            f"Gangguan area Kecamatan {kec}: {down} dari {total} perangkat mati sejak {since}",
        )
    device = outage["device_id"]
    if outage["kind"] == "alarm":
        value = (outage["detail"] or {}).get("value")
        shown = f" {outage['metric']} = {value}" if value is not None else f" {outage['metric']}"
        return (
            f"{outage['level']} on {device} ({kec}):{shown} since {since}",
            f"{outage['level']} pada {device} ({kec}):{shown} sejak {since}",
        )
    cause = outage["cause"]
    return (
        f"Device {device} down since {since} ({CAUSES_EN.get(cause, cause)}), {kec}",
        f"Perangkat {device} mati sejak {since} ({CAUSES_ID.get(cause, cause)}), Kecamatan {kec}",
    )


def alert(outage: dict[str, Any], now: datetime, resend_seconds: float) -> dict[str, Any]:
    """One alert of Alertmanager's v2 API for an outage (resolved when it has ended)."""
    labels = {
        "alertname": ALERTNAMES[outage["kind"]],
        "device": outage["device_id"],
        "type": outage["device_type"],
        "kecamatan": outage["kecamatan_name"],
        "pillar": outage["pillar"],
        "severity": outage["severity"],
        "cause": outage["cause"],
    }
    if outage["kind"] == "alarm":
        labels |= {"metric": outage["metric"], "level": outage["level"]}
    summary, summary_id = summaries(outage, now)
    annotations = {"summary": summary, "summary_id": summary_id}
    if outage["device_name"]:
        annotations["device_name"] = outage["device_name"]
    ended = outage["ended_at"]
    ends = ended if ended is not None else now + timedelta(seconds=LEASE_PERIODS * resend_seconds)
    return {
        "labels": {k: str(v) for k, v in labels.items() if v not in (None, "")},
        "annotations": annotations,
        "startsAt": outage["started_at"].isoformat(),
        "endsAt": ends.isoformat(),
    }


def webhook_body(row: dict[str, Any], outage: dict[str, Any], now: datetime) -> bytes:
    """The JSON a webhook receives: {event_id, event, outage{...}}, compact UTF-8."""
    summary, summary_id = summaries(outage, now)
    shown = {
        key: (value.isoformat() if isinstance(value, datetime) else value)
        for key, value in outage.items()
    }
    shown |= {"summary": summary, "summary_id": summary_id}
    document = {"event_id": str(row["event_id"]), "event": row["event"], "outage": shown}
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """X-Pantau-Signature: "sha256=" + hex HMAC-SHA256(secret, f"{timestamp}.{body}")."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    now: float | None = None,
    window: float = REPLAY_WINDOW_SECONDS,
) -> bool:
    """What a receiver checks: the signature matches (in constant time) and the timestamp is
    within `window` seconds of its clock, so a captured request cannot be replayed later."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > window:
        return False
    return hmac.compare_digest(sign(secret, sent, body), signature)


class Delivery:
    def __init__(
        self,
        settings: OutagesSettings,
        metrics: DeliveryMetrics,
        backoff: Backoff | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.receivers = settings.receivers()
        self.webhooks: dict[str, WebhookSettings] = {w.name: w for w in settings.webhooks}
        self.backoff = backoff or Backoff(
            initial=1.0, maximum=settings.delivery_max_backoff_seconds
        )

    async def deliver_due(
        self, conn: psycopg.AsyncConnection, client: httpx.AsyncClient
    ) -> Outcome:
        """One round: claim the due rows, send them, mark them, in one transaction."""
        async with conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(_CLAIM, {"receivers": self.receivers, "limit": BATCH})
            rows = await cur.fetchall()
            if not rows:
                return Outcome(0, 0, 0)
            await cur.execute(
                _OUTAGES + " WHERE o.id = ANY(%(ids)s)",
                {"ids": list({r["outage_id"] for r in rows})},
            )
            outages = {o["id"]: o for o in await cur.fetchall()}
            now = datetime.now(UTC)
            errors: dict[int, str] = {}  # row id -> why it failed; absent = delivered
            am_rows = [r for r in rows if r["receiver"] == ALERTMANAGER]
            if am_rows:
                alerts = [
                    alert(outages[r["outage_id"]], now, self.settings.alertmanager_resend_seconds)
                    for r in am_rows
                ]
                error = await self._post_alertmanager(client, alerts)
                if error is not None:
                    errors |= {r["id"]: error for r in am_rows}
            hook_rows = [r for r in rows if r["receiver"] != ALERTMANAGER]
            if hook_rows:
                limit = asyncio.Semaphore(WEBHOOK_CONCURRENCY)

                async def one(row: dict[str, Any]) -> None:
                    async with limit:
                        failure = await self._post_webhook(
                            client, row, webhook_body(row, outages[row["outage_id"]], now)
                        )
                    if failure is not None:
                        errors[row["id"]] = failure

                async with asyncio.TaskGroup() as group:
                    for row in hook_rows:
                        group.create_task(one(row))
            delivered = [r["id"] for r in rows if r["id"] not in errors]
            failed = [r for r in rows if r["id"] in errors]
            if delivered:
                await cur.execute(_DELIVERED, {"ids": delivered})
            if failed:
                await cur.execute(
                    _FAILED,
                    {
                        "ids": [r["id"] for r in failed],
                        "errors": [errors[r["id"]] for r in failed],
                        "delays": [self.backoff.delay(r["attempts"]) for r in failed],
                    },
                )
        for r in rows:
            result = "failed" if r["id"] in errors else "delivered"
            self.metrics.deliveries.labels(r["receiver"], result).inc()
        return Outcome(len(rows), len(delivered), len(failed))

    async def resend_active(self, conn: psycopg.AsyncConnection, client: httpx.AsyncClient) -> int:
        """Send every active alert Alertmanager knows of again, with a fresh endsAt lease."""
        if not self.settings.alertmanager_urls:
            return 0
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(_ACTIVE)
        outages = await cur.fetchall()
        now = datetime.now(UTC)
        resend = self.settings.alertmanager_resend_seconds
        for start in range(0, len(outages), RESEND_CHUNK):
            chunk = [alert(o, now, resend) for o in outages[start : start + RESEND_CHUNK]]
            error = await self._post_alertmanager(client, chunk)
            if error is not None:
                log.warning("re-sending %d active alerts failed: %s", len(chunk), error)
        return len(outages)

    async def next_due(self, conn: psycopg.AsyncConnection) -> float | None:
        """Seconds until the next pending row is due (None: nothing pending); sets the gauge."""
        cur = await conn.execute(_NEXT_DUE, {"receivers": self.receivers})
        row = await cur.fetchone()
        assert row is not None  # noqa: S101 - an aggregate always returns its row
        self.metrics.pending.set(row[0])
        return None if row[1] is None else float(row[1])

    async def _post_alertmanager(
        self, client: httpx.AsyncClient, alerts: list[dict[str, Any]]
    ) -> str | None:
        """POST to every replica; None when at least one accepted, else what each said."""
        urls = self.settings.alertmanager_urls
        results: list[str | None] = [None] * len(urls)

        async def one(i: int, base: str) -> None:
            url = base.rstrip("/") + "/api/v2/alerts"
            try:
                response = await client.post(url, json=alerts, timeout=ALERTMANAGER_TIMEOUT_SECONDS)
            except httpx.HTTPError as exc:
                results[i] = f"{url}: {type(exc).__name__}: {exc}"
                return
            if not response.is_success:
                results[i] = f"{url}: HTTP {response.status_code} {response.text[:200]}"

        async with asyncio.TaskGroup() as group:
            for i, base in enumerate(urls):
                group.create_task(one(i, base))
        for error in results:
            if error is not None:
                log.warning("alertmanager replica did not accept %d alerts: %s", len(alerts), error)
        if any(error is None for error in results):
            return None
        return "; ".join(e for e in results if e is not None)

    async def _post_webhook(
        self, client: httpx.AsyncClient, row: dict[str, Any], body: bytes
    ) -> str | None:
        hook = self.webhooks[row["receiver"]]
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "X-Pantau-Event-Id": str(row["event_id"]),
            "X-Pantau-Timestamp": str(timestamp),
            "X-Pantau-Signature": sign(hook.secret.get_secret_value(), timestamp, body),
        }
        try:
            response = await client.post(
                hook.url, content=body, headers=headers, timeout=hook.timeout_seconds
            )
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            if response.is_success:
                return None
            error = f"HTTP {response.status_code} {response.text[:200]}"
        log.warning("webhook %s: event %s not delivered: %s", hook.name, row["event_id"], error)
        return error


async def run_delivery(
    connect: Callable[[], Awaitable[psycopg.AsyncConnection]],
    settings: OutagesSettings,
    metrics: DeliveryMetrics,
    stop: asyncio.Event,
) -> None:
    """The delivery worker: a round whenever rows are due (woken by NOTIFY), and the active
    alerts re-sent to Alertmanager every `alertmanager_resend_seconds`. A lost connection is an
    error: the supervisor restarts the worker."""
    delivery = Delivery(settings, metrics)
    resend = settings.alertmanager_resend_seconds
    async with httpx.AsyncClient() as client, await connect() as conn:
        await conn.execute(f"LISTEN {CHANNEL}")
        next_resend = time.monotonic() + resend
        while not stop.is_set():
            outcome = await delivery.deliver_due(conn, client)
            if time.monotonic() >= next_resend:
                await delivery.resend_active(conn, client)
                next_resend = time.monotonic() + resend
            due = await delivery.next_due(conn)
            if outcome.claimed == BATCH:
                continue  # more may be due now
            wait = min(MAX_IDLE_SECONDS, next_resend - time.monotonic())
            if due is not None:
                # Rows due but not claimed are held by another instance (or wait for an earlier
                # event of their outage): look again in a second.
                wait = min(wait, max(due, 0.0 if outcome.claimed else 1.0))
            await _wait_for_news(conn, stop, max(wait, 0.0))
