"""Draining a retired MQTT session into a surviving pipeline, then ending it (see ingest/layout.py).

A retired session (a process `ingest.processes` no longer runs, or the client id of an earlier
layout) keeps its subscription at the broker, and with a shared subscription Mosquitto keeps
routing it a share of the messages (eclipse/mosquitto issue 1747). Once the surviving pipeline's
own subscription is in place, a `Drain` connects with the retired client id without a clean
start, unsubscribes (the broker stops routing it anything new), and hands what the broker had
queued to the surviving pipeline, like any message: acknowledged only once committed or spooled.
When everything it received is acknowledged and nothing more has come for `QUIET_SECONDS`, the
broker's queue for it is empty: it disconnects with a session expiry of 0 (MQTT 5; with 3.1.1 it
connects once more with a clean session), and the broker forgets the session.

Bounded: an attempt ends at `DEADLINE_SECONDS` (the session is kept, with what is left of its
queue, and tried again after a backoff); after `ATTEMPTS` attempts in a row that took nothing and
did not end the session, it is left for the next start, logged with the manual procedure.
"""

from __future__ import annotations

import itertools
import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client import CollectorRegistry

from ingest import layout
from ingest.batch import Message
from ingest.layout import Record
from ingest.metrics import IngestMetrics
from ingest.pipeline import Pipeline
from ingest.subscriber import Subscriber
from ingest.text import topic_text
from pantau.mqtt import apply_credentials
from pantau.settings import MqttSettings, Settings
from pantau.supervisor import Backoff

log = logging.getLogger(__name__)

QUIET_SECONDS = 1.0
DEADLINE_SECONDS = 300.0
ATTEMPTS = 5
_CONNECT_SECONDS = 10.0


class Drain:
    """Takes a retired session's queued messages into a pipeline, then ends the session."""

    def __init__(
        self,
        settings: MqttSettings,
        filters: Sequence[str],
        on_message: Callable[[Message], None],
        metrics: IngestMetrics,
        generations: Iterator[int],
        on_done: Callable[[str], None],
    ) -> None:
        self._settings = settings
        self.client_id = settings.client_id
        self._filters = list(filters)
        self._deliver = on_message
        self._metrics = metrics
        self._generations = generations
        self._on_done = [on_done]
        self._lock = threading.Lock()
        self._generation = -1
        self._acks: deque[Sequence[tuple[int, int, int]]] = deque()
        self._received = 0
        self._acked = 0
        self._last = 0.0  # monotonic time of the last message or acknowledgement
        self._connack: ReasonCode | None = None
        self._session_present = False
        self._unsubscribed = False
        self._lost = False
        self._absent = False  # the broker had no session of that id

    def on_done_also(self, callback: Callable[[str], None]) -> None:
        self._on_done.append(callback)

    def ack(self, acks: Sequence[tuple[int, int, int]]) -> None:
        """Acknowledgements the pipeline released (for every subscriber): ours are those of our
        connection's generation; the network thread sends them."""
        self._acks.append(acks)

    def run(self, stop: threading.Event, ready: threading.Event) -> None:
        """Once `ready` (the surviving pipeline is subscribed), drain and end the session; give
        up after `ATTEMPTS` fruitless attempts or when `stop` is set. Never raises: a drain
        that fails must not stop the pipeline it feeds."""
        try:
            self._run(stop, ready)
        except Exception:
            log.exception("retired MQTT session %s: drain failed", self.client_id)

    def _run(self, stop: threading.Event, ready: threading.Event) -> None:
        while not ready.wait(0.5):
            if stop.is_set():
                return
        backoff = Backoff(
            self._settings.reconnect_min_seconds, self._settings.reconnect_max_seconds
        )
        fruitless = 0
        taken = 0
        while not stop.is_set():
            try:
                ended, received = self._attempt(stop)
            except (OSError, ssl.SSLError, ValueError) as exc:
                ended, received = False, 0
                log.warning("retired MQTT session %s: %s", self.client_id, exc)
            taken += received
            if ended and self._absent and not taken:
                log.info("retired MQTT session %s: none at the broker", self.client_id)
                self._done()
                return
            if ended:
                log.info(
                    "retired MQTT session %s drained (%d messages taken) and ended",
                    self.client_id,
                    taken,
                )
                self._metrics.retired_sessions.inc()
                self._done()
                return
            fruitless = 0 if received else fruitless + 1
            if fruitless >= ATTEMPTS:
                log.error(
                    "retired MQTT session %s not ended after %d attempts; it keeps its queue "
                    "and is tried again at the next start (or remove it by hand: "
                    "docs/deploy.md, 'Retiring an instance for good')",
                    self.client_id,
                    fruitless,
                )
                return
            stop.wait(backoff.delay(fruitless))

    def _done(self) -> None:
        for callback in self._on_done:
            callback(self.client_id)

    # --- one attempt (the drain's own network thread) ---------------------------------------

    def _attempt(self, stop: threading.Event) -> tuple[bool, int]:
        """(session ended, messages received)."""
        s = self._settings
        v5 = s.protocol == "5"
        client = self._client(clean=False)
        self._connack, self._session_present, self._unsubscribed, self._lost = (
            None,
            False,
            False,
            False,
        )
        self._received = self._acked = 0
        if v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = s.session_expiry_seconds
            props.ReceiveMaximum = s.receive_maximum
            client.connect(s.host, s.port, s.keepalive_seconds, clean_start=False, properties=props)
        else:
            client.connect(s.host, s.port, s.keepalive_seconds)
        try:
            if not self._loop_until(
                client, stop, lambda: self._connack is not None, _CONNECT_SECONDS
            ):
                if stop.is_set():
                    return False, 0
                raise OSError("no answer to CONNECT")
            if self._connack is not None and self._connack.is_failure:
                raise OSError(f"broker refused the connection: {self._connack}")
            if not self._session_present:  # none at the broker (or ended before a crash)
                self._end(client)
                self._absent = True
                return True, 0
            log.info(
                "retired MQTT session %s resumed; taking what the broker queued", self.client_id
            )
            client.unsubscribe(self._filters)
            deadline = time.monotonic() + DEADLINE_SECONDS
            self._last = time.monotonic()
            while not stop.is_set() and not self._lost and time.monotonic() < deadline:
                self._send_acks(client)
                rc = client.loop(timeout=0.05 if self._acks else 0.1)
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    raise OSError(f"connection lost ({mqtt.error_string(rc)})")
                if self._drained():
                    self._end(client)
                    return True, self._received
            if not stop.is_set() and not self._lost:
                log.warning(
                    "retired MQTT session %s: not drained within %.0fs (%d messages taken); "
                    "keeping it and trying again",
                    self.client_id,
                    DEADLINE_SECONDS,
                    self._received,
                )
            self._leave(client)
            return False, self._received
        finally:
            with self._lock:
                self._generation = -1  # acks released later are void: the broker redelivers
            client.disconnect()  # (done already, unless this attempt failed)

    def _drained(self) -> bool:
        return (
            self._unsubscribed
            and not self._acks
            and self._acked == self._received
            and time.monotonic() - self._last >= QUIET_SECONDS
        )

    def _end(self, client: mqtt.Client) -> None:
        """Disconnect so that the broker discards the session."""
        if self._settings.protocol == "5":
            props = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0
            client.disconnect(properties=props)
            client.loop(timeout=0.2)
            return
        self._leave(client)
        clean = self._client(clean=True)  # 3.1.1: a clean session replaces the stored one
        s = self._settings
        clean.connect(s.host, s.port, s.keepalive_seconds)
        self._connack = None
        if not self._loop_until(clean, threading.Event(), lambda: self._connack is not None, 10):
            raise OSError("no answer to the clean CONNECT")
        clean.disconnect()
        clean.loop(timeout=0.2)

    def _leave(self, client: mqtt.Client) -> None:
        """Disconnect keeping the session (its expiry as connected)."""
        self._send_acks(client)
        client.loop(timeout=0.1)
        client.disconnect()
        client.loop(timeout=0.2)

    def _loop_until(
        self, client: mqtt.Client, stop: threading.Event, done: Callable[[], bool], timeout: float
    ) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            if stop.is_set() or time.monotonic() > deadline:
                return False
            rc = client.loop(timeout=0.1)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise OSError(f"connection lost ({mqtt.error_string(rc)})")
        return True

    def _send_acks(self, client: mqtt.Client) -> None:
        sent = 0
        while self._acks:
            acks = self._acks.popleft()
            with self._lock:
                generation = self._generation
                for mid, qos, gen in acks:
                    if gen == generation and qos:
                        client.ack(mid, qos)
                        sent += 1
        if sent:
            self._acked += sent
            self._last = time.monotonic()
            self._metrics.messages_acked.inc(sent)

    # --- paho ------------------------------------------------------------------------------

    def _client(self, *, clean: bool) -> mqtt.Client:
        s = self._settings
        v5 = s.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else clean,
            manual_ack=True,
            reconnect_on_failure=False,
        )
        apply_credentials(client, s)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_unsubscribe = self._on_unsubscribe
        client.on_message = self._on_message
        return client

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connack = reason
        self._session_present = bool(flags.session_present)
        if not reason.is_failure:
            with self._lock:
                self._generation = next(self._generations)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._lock:
            self._generation = -1
        self._lost = True

    def _on_unsubscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        self._unsubscribed = True
        self._last = time.monotonic()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = topic_text(msg._topic)
        if msg.qos:  # what the broker waits an acknowledgement for
            self._received += 1
        self._last = time.monotonic()
        self._metrics.retired_messages.inc()
        self._deliver(
            Message(
                topic,
                cast(bytes, msg.payload),
                datetime.now(UTC),
                msg.mid,
                msg.qos,
                self._generation,
            )
        )


def drains(
    record: Record,
    mqtt_settings: MqttSettings,
    pipeline: Pipeline,
    subscriber: Subscriber | None,
    metrics: IngestMetrics,
) -> list[Drain]:
    """A drain for each retired session the record still lists, into `pipeline`; the pipeline's
    acknowledgements go to its subscriber and to every drain (each sends its own)."""
    retiring = record.retiring()
    metrics.retiring_sessions.set(len(retiring))
    generations = subscriber.generations if subscriber is not None else itertools.count(1)

    def done(client_id: str) -> None:
        record.done(client_id)
        metrics.retiring_sessions.dec()

    out = [
        Drain(
            mqtt_settings.model_copy(update={"client_id": client_id}),
            filters,
            pipeline.on_message,
            metrics,
            generations,
            done,
        )
        for client_id, filters in sorted(retiring.items())
    ]
    acks = [*([subscriber.ack] if subscriber is not None else []), *(d.ack for d in out)]
    if out:

        def fan_out(released: Sequence[tuple[int, int, int]]) -> None:
            for ack in acks:
                ack(released)

        pipeline.ack = fan_out
    return out


@dataclass
class Retirement:
    """What `pantau retire` did."""

    ended: list[str]
    left: list[str]  # sessions not ended (the broker keeps them and their queues)
    spool_left: list[Path]  # segments not replayed (the database was down)


def retire_instance(settings: Settings, timeout: float) -> Retirement:
    """The instance retired for good (stopped): its spools replayed into the database, and each
    of its sessions drained into the same pipeline and ended; within `timeout` seconds."""
    from ingest.service import build_pipeline

    layout.prepare(settings, everything=True)
    one = settings.model_copy(
        update={"ingest": settings.ingest.model_copy(update={"processes": 1})}
    )
    metrics = IngestMetrics.create(CollectorRegistry())
    pipeline, _ = build_pipeline(one, metrics, lambda: True)
    record = Record(settings.ingest.spool_dir)
    ended: list[str] = []
    out = drains(record, settings.mqtt, pipeline, None, metrics)
    for drain in out:
        drain.on_done_also(ended.append)
    stop, ready = threading.Event(), threading.Event()
    ready.set()  # nothing of ours stays subscribed: the other instances take the group's share
    writer = threading.Thread(target=pipeline.run, name="retire-writer", daemon=True)
    writer.start()
    threads = [
        threading.Thread(target=d.run, args=(stop, ready), name=f"retire-{i}", daemon=True)
        for i, d in enumerate(out)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stop.set()  # past the deadline: the drains leave, keeping their sessions
    for thread in threads:
        thread.join(15)
    pipeline.stop()  # the last batch, with the spool replayed first while the database is up
    writer.join(max(15.0, deadline - time.monotonic()))
    left = sorted(record.retiring())
    return Retirement(sorted(ended), left, sorted(settings.ingest.spool_dir.glob("*.spool")))
