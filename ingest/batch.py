"""Messages in, batches out: route each message to its mapping's decoder and collect the readings
to write, the statuses devices report of themselves, the payloads to quarantine and the
acknowledgements owed once all are durable."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import NamedTuple

from ingest.decoders import (
    NO_MAPPING,
    PAYLOAD_TOO_LARGE,
    TOO_MANY_READINGS,
    Decoder,
    Limits,
    Reading,
    build_decoder,
)
from ingest.text import visible
from ingest.topics import Router
from pantau.ids import DEVICE_ID
from pantau.mappings import MappingSettings

# A payload over ingest.max_payload_bytes keeps only this much of its head in quarantine.
KEPT_HEAD_BYTES = 4096
DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024
DEFAULT_MAX_READINGS = 1000


@dataclass(slots=True)
class Message:
    topic: str
    payload: bytes
    received_at: datetime
    mid: int = 0
    qos: int = 0
    generation: int = 0  # of the broker connection it came on; acks only go back on that one


@dataclass(slots=True)
class Quarantined:
    received_at: datetime
    topic: str
    payload: bytes  # whole, or only its head when `size` says it was longer
    reason: str
    detail: str
    mapping: str | None
    source: str = ""  # the device the topic names, else the topic: what the hourly cap counts
    size: int | None = None  # of the whole payload, when only its head is kept
    sha256: bytes | None = None  # of the whole payload, when only its head is kept

    @property
    def whole_size(self) -> int:
        return len(self.payload) if self.size is None else self.size

    def payload_sha256(self) -> bytes:
        return self.sha256 if self.sha256 is not None else hashlib.sha256(self.payload).digest()


class StatusReport(NamedTuple):
    """A status (or last-will) message's news, written with its batch through
    pantau_report_status: the device says it is up or down, at the message's arrival time."""

    device: str
    up: bool
    cause: str | None
    received_at: datetime
    origin: int  # the index of its message in the batch


@dataclass(slots=True)
class Batch:
    readings: list[Reading] = field(default_factory=list)
    # For each reading, the index of its message in `messages` (to quarantine it if refused).
    origins: list[int] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    quarantine: list[Quarantined] = field(default_factory=list)
    statuses: list[StatusReport] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.readings)

    def devices(self) -> set[str]:
        return {r[1] for r in self.readings}

    def hold_devices(self, devices: set[str], reason: str, explain: str) -> None:
        """Quarantine, whole, every message with a reading of one of `devices`; its detail is
        `explain` followed by the message's own devices among them."""
        held: dict[int, set[str]] = {}
        for reading, origin in zip(self.readings, self.origins, strict=True):
            if reading[1] in devices:
                held.setdefault(origin, set()).add(reading[1])
        keep = [i for i, o in enumerate(self.origins) if o not in held]
        self.readings = [self.readings[i] for i in keep]
        self.origins = [self.origins[i] for i in keep]
        for index, names in sorted(held.items()):
            m = self.messages[index]
            detail = visible(f"{explain}{', '.join(sorted(names))}"[:300])
            self.quarantine.append(
                Quarantined(m.received_at, m.topic, m.payload, reason, detail, None, min(names))
            )

    def last_statuses(self) -> list[tuple[StatusReport, bool]]:
        """Each device's last status in the batch (sorted by device, so concurrent instances
        lock rows in one order), and whether a reading of the device came after it."""
        last: dict[str, StatusReport] = {}
        for status in self.statuses:
            last[status.device] = status
        if not last:
            return []
        newest: dict[str, int] = {}  # device -> index of its last message with readings
        for reading, origin in zip(self.readings, self.origins, strict=True):
            if reading[1] in last:
                newest[reading[1]] = origin
        return [(last[d], newest.get(d, -1) > last[d].origin) for d in sorted(last)]

    @property
    def acks(self) -> list[tuple[int, int, int]]:
        """(mid, qos, generation) of every QoS 1 message in the batch."""
        return [(m.mid, m.qos, m.generation) for m in self.messages if m.qos]


class Processor:
    """Decodes messages with the configured mappings."""

    def __init__(
        self,
        mappings: Sequence[MappingSettings],
        limits: Limits,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        max_readings: int = DEFAULT_MAX_READINGS,
    ) -> None:
        self.router = Router(mappings)
        self.decoders: list[Decoder] = [build_decoder(m, limits) for m in mappings]
        # The topic segment naming the device, per mapping (None: the device is in the payload).
        self._device_segment = [
            m.device[1:-1] if m.device.startswith("{") else None for m in mappings
        ]
        self.max_payload_bytes = max_payload_bytes
        self.max_readings = max_readings

    @classmethod
    def from_settings(
        cls,
        mappings: Sequence[MappingSettings],
        max_future_seconds: float,
        max_past_days: float,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        max_readings: int = DEFAULT_MAX_READINGS,
    ) -> Processor:
        return cls(
            mappings,
            Limits(timedelta(seconds=max_future_seconds), timedelta(days=max_past_days)),
            max_payload_bytes=max_payload_bytes,
            max_readings=max_readings,
        )

    def _source(self, topic: str, mapping: int | None, captured: dict[str, str]) -> str:
        """What the quarantine's hourly cap counts: the device the topic names, else the topic."""
        segment = self._device_segment[mapping] if mapping is not None else None
        device = captured.get(segment) if segment is not None else None
        return device if device is not None and DEVICE_ID.match(device) else topic

    def add(self, batch: Batch, message: Message) -> None:
        """Decode one message into `batch`. A message that yields no readings is kept in
        `batch.messages` (for its acknowledgement, the spool and `dead-letters --show`) with only
        its first KEPT_HEAD_BYTES: its payload is needed only by a reading the database refuses,
        and what is quarantined of it is in `batch.quarantine`. So a 20 MB payload costs the
        spool and the dead letters 4 KiB, not 27 MB of base64."""
        index = len(batch.messages)
        batch.messages.append(message)
        self._decode(batch, message, index)
        if not (batch.origins and batch.origins[-1] == index):
            batch.messages[index] = _head(message)

    def _decode(self, batch: Batch, message: Message, index: int) -> None:
        routed = self.router.route(message.topic)
        if len(message.payload) > self.max_payload_bytes:  # mapped or not: only its head is kept
            self._too_large(batch, message, routed)
            return
        if routed is None:
            batch.quarantine.append(
                Quarantined(
                    message.received_at,
                    visible(message.topic),
                    message.payload,
                    NO_MAPPING,
                    "no mapping matches this topic",
                    None,
                    visible(message.topic),
                )
            )
            return
        decoder = self.decoders[routed[0]]
        decoded = decoder.decode(message.payload, routed[1], message.received_at)
        readings = decoded.readings
        if len(readings) > self.max_readings:
            self._quarantine(
                batch,
                message,
                TOO_MANY_READINGS,
                f"{len(readings):,} readings in one message, over ingest.max_readings_per_message"
                f" ({self.max_readings:,}); none written",
                decoder.name,
                routed,
            )
            return
        if readings:
            batch.readings.extend(readings)
            batch.origins.extend([index] * len(readings))
        if decoded.status is not None:
            device, up, cause = decoded.status
            batch.statuses.append(StatusReport(device, up, cause, message.received_at, index))
        if decoded.problems:
            first = decoded.problems[0]
            detail = "; ".join(p.detail for p in decoded.problems[:5])
            if len(decoded.problems) > 5:
                detail += f"; and {len(decoded.problems) - 5} more"
            self._quarantine(batch, message, first.reason, detail[:1000], decoder.name, routed)

    def _quarantine(
        self,
        batch: Batch,
        message: Message,
        reason: str,
        detail: str,
        mapping: str,
        routed: tuple[int, dict[str, str]],
    ) -> None:
        topic = visible(message.topic)
        batch.quarantine.append(
            Quarantined(
                message.received_at,
                topic,
                message.payload,
                reason,
                visible(detail),
                self.decoders[routed[0]].name if routed else None,
                visible(self._source(topic, *routed) if routed else topic),
            )
        )

    def _too_large(
        self, batch: Batch, message: Message, routed: tuple[int, dict[str, str]] | None
    ) -> None:
        """Only the head of an oversized payload is kept, with the whole one's size and hash."""
        payload = message.payload
        sha256 = hashlib.sha256(payload).digest()
        topic = visible(message.topic)
        batch.quarantine.append(
            Quarantined(
                message.received_at,
                topic,
                payload[:KEPT_HEAD_BYTES],
                PAYLOAD_TOO_LARGE,
                f"payload of {len(payload):,} bytes is over ingest.max_payload_bytes "
                f"({self.max_payload_bytes:,}); sha256 {sha256.hex()}; "
                f"only the first {KEPT_HEAD_BYTES:,} bytes kept",
                self.decoders[routed[0]].name if routed else None,
                visible(self._source(topic, *routed) if routed else topic),
                len(payload),
                sha256,
            )
        )

    def batch(self, messages: Iterable[Message]) -> Batch:
        batch = Batch()
        for message in messages:
            self.add(batch, message)
        return batch


def _head(message: Message) -> Message:
    """The message with only the first KEPT_HEAD_BYTES of its payload."""
    if len(message.payload) <= KEPT_HEAD_BYTES:
        return message
    return replace(message, payload=message.payload[:KEPT_HEAD_BYTES])
