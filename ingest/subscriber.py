"""The MQTT subscriber: a persistent QoS 1 session with manual acknowledgements (paho-mqtt 2.x).

Why paho and not aiomqtt: the guarantee "acknowledged only once durable" needs manual PUBACKs,
which paho-mqtt 2.x has and aiomqtt does not yet; paho's own network thread is also the fastest
Python receiver measured on these machines. Its thread hands messages to the pipeline and sends
the acknowledgements the writer releases.

Every connection gets a new *generation*. A message remembers the generation it came on, and its
acknowledgement is only sent on that same connection: after a reconnect the broker redelivers
what was not acknowledged (and may reuse packet ids), so a late PUBACK must never cross over.
"""

from __future__ import annotations

import itertools
import logging
import ssl
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest.batch import Message
from ingest.metrics import IngestMetrics
from ingest.text import topic_text
from pantau.mqtt import apply_credentials
from pantau.settings import MqttSettings
from pantau.supervisor import Backoff

log = logging.getLogger(__name__)


class _BufferedClient(mqtt.Client):
    """paho reads each packet with three or four recv() calls (the command byte, each length
    byte, the body). Reading 64 KiB at once and handing paho slices of it does the same work
    with a fraction of the system calls; `buffered` tells the loop to go on without select().
    (This overrides paho's one socket-reading method, `_sock_recv`; constraints.txt pins the
    paho version it is tested with.)"""

    _chunk = b""
    _offset = 0

    @property
    def buffered(self) -> bool:
        return self._offset < len(self._chunk)

    def drop_buffer(self) -> None:
        self._chunk, self._offset = b"", 0

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._offset >= len(self._chunk):
            data = super()._sock_recv(65536)
            if len(data) <= bufsize:
                return data
            self._chunk, self._offset = data, 0
        start = self._offset
        self._offset = min(start + bufsize, len(self._chunk))
        return self._chunk[start : self._offset]


class Subscriber:
    def __init__(
        self,
        settings: MqttSettings,
        filters: Sequence[str],
        on_message: Callable[[Message], None],
        metrics: IngestMetrics,
    ) -> None:
        self._settings = settings
        self._filters = list(filters)
        self._deliver = on_message
        self._metrics = metrics
        self._lock = threading.Lock()
        # Generations are drawn from a counter shared with this pipeline's drains of retired
        # sessions (ingest/retire.py): an acknowledgement names its connection whoever sends it.
        self.generations: Iterator[int] = itertools.count(1)
        self._generation = 0
        self.subscribed = threading.Event()  # the broker acknowledged our subscription
        self._connected = False
        self.reason = "not connected yet"
        self._refusal: str | None = None  # why the broker said no, kept over later noise
        self._acks: deque[Sequence[tuple[int, int, int]]] = deque()
        self._client = self._make_client()

    @property
    def where(self) -> str:
        return f"{self._settings.host}:{self._settings.port}"

    @property
    def connected(self) -> bool:
        return self._connected

    # --- the network thread ----------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Connect, receive and reconnect (backoff with jitter) until `stop` is set."""
        failures = 0
        while not stop.is_set():
            self._refusal = None
            self._client.drop_buffer()  # nothing of an old connection may be read on a new one
            try:
                self._connect()
            except (OSError, ssl.SSLError) as exc:
                self._set_down(f"cannot connect: {exc}")
            else:
                client = self._client
                while not stop.is_set():
                    self._send_acks()
                    rc = client.loop(timeout=0.02 if self._acks else 0.1)
                    # Packets already read into the buffer need no select() to be handled.
                    burst = 0
                    while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and client.buffered and burst < 500:
                        rc = client.loop_read()
                        burst += 1
                    if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        lost = f"connection lost ({mqtt.error_string(rc)})"
                        self._set_down(self._refusal or lost)
                        break
                if self._connected or self._refusal is None:
                    failures = 0
            if stop.is_set():
                break
            delay = self._backoff(failures)
            failures += 1
            self._metrics.mqtt_reconnects.inc()
            log.warning("MQTT broker %s: %s; reconnecting in %.1fs", self.where, self.reason, delay)
            stop.wait(delay)
        self._close()

    def ack(self, acks: Sequence[tuple[int, int, int]]) -> None:
        """Release acknowledgements (from the writer thread); the network thread sends them."""
        self._acks.append(acks)

    def _send_acks(self) -> int:
        """Acknowledge released messages that came on the current connection (network thread)."""
        sent = 0
        while self._acks:
            acks = self._acks.popleft()
            with self._lock:
                if not self._connected:
                    continue  # the broker redelivers them on the next connection
                generation = self._generation
                ack = self._client.ack
                for mid, qos, gen in acks:
                    if gen == generation and qos:
                        ack(mid, qos)
                        sent += 1
        if sent:
            self._metrics.messages_acked.inc(sent)
        return sent

    # --- internals ----------------------------------------------------------------------------

    def _make_client(self) -> _BufferedClient:
        s = self._settings
        v5 = s.protocol == "5"
        client = _BufferedClient(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else False,
            manual_ack=True,
            reconnect_on_failure=False,  # we reconnect ourselves, with jitter
        )
        apply_credentials(client, s)
        # Only the network thread writes to the socket (acks included); with this callback set,
        # paho never writes from another thread even if a future change calls it from one.
        client.on_socket_register_write = _let_network_thread_write
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _connect(self) -> None:
        s = self._settings
        if s.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = s.session_expiry_seconds
            props.ReceiveMaximum = s.receive_maximum
            self._client.connect(
                s.host, s.port, s.keepalive_seconds, clean_start=False, properties=props
            )
        else:
            self._client.connect(s.host, s.port, s.keepalive_seconds)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._refusal = f"broker refused the connection: {reason}"
            self._set_down(self._refusal)
            client.disconnect()
            return
        with self._lock:
            self._generation = next(self.generations)
            self._connected = True
        self.reason = "connected"
        self._metrics.mqtt_connected.set(1)
        if self._settings.protocol == "5":
            # Retained messages only on a new subscription, not again on every reconnect.
            options = SubscribeOptions(qos=1, retainHandling=1)
            client.subscribe([(f, options) for f in self._filters])
        else:
            client.subscribe([(f, 1) for f in self._filters])
        log.info(
            "connected to MQTT broker %s (session %s); subscribed to %s",
            self.where,
            "resumed" if flags.session_present else "new",
            ", ".join(self._filters),
        )

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if any(not r.is_failure for r in reasons):
            self.subscribed.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._set_down(self._refusal or f"disconnected ({reason})")

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # MQTT forbids it; quarantined, visibly escaped
            topic = topic_text(msg._topic)
        self._deliver(
            Message(
                topic,
                cast(bytes, msg.payload),  # paho hands over the bytes it read
                datetime.now(UTC),
                msg.mid,
                msg.qos,
                self._generation,
            )
        )

    def _set_down(self, reason: str) -> None:
        with self._lock:
            if self._connected:
                self._generation = next(
                    self.generations
                )  # acks of this connection's messages are void now
            self._connected = False
        self.reason = reason
        self._metrics.mqtt_connected.set(0)

    def _close(self) -> None:
        try:
            if self._send_acks():  # what the writer released while we were stopping
                self._client.loop(timeout=0.2)
            self._client.disconnect()
            self._client.loop(timeout=0.2)
        except (OSError, ssl.SSLError):
            pass
        self._set_down("stopped")

    def _backoff(self, failures: int) -> float:
        s = self._settings
        return Backoff(s.reconnect_min_seconds, s.reconnect_max_seconds).delay(failures)


def _let_network_thread_write(client: mqtt.Client, userdata: object, sock: object) -> None:
    return None
