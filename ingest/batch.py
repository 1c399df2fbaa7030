"""Messages in, batches out: route each message to its mapping's decoder and collect the readings
to write, the payloads to quarantine and the acknowledgements owed once both are durable."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ingest.decoders import (
    NO_MAPPING,
    Decoder,
    Limits,
    Reading,
    build_decoder,
)
from ingest.topics import Router
from pantau.mappings import MappingSettings


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
    payload: bytes
    reason: str
    detail: str
    mapping: str | None


@dataclass(slots=True)
class Batch:
    readings: list[Reading] = field(default_factory=list)
    # For each reading, the index of its message in `messages` (to quarantine it if refused).
    origins: list[int] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    quarantine: list[Quarantined] = field(default_factory=list)

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
            detail = f"{explain}{', '.join(sorted(names))}"[:300]
            self.quarantine.append(
                Quarantined(m.received_at, m.topic, m.payload, reason, detail, None)
            )

    @property
    def acks(self) -> list[tuple[int, int, int]]:
        """(mid, qos, generation) of every QoS 1 message in the batch."""
        return [(m.mid, m.qos, m.generation) for m in self.messages if m.qos]


class Processor:
    """Decodes messages with the configured mappings."""

    def __init__(self, mappings: Sequence[MappingSettings], limits: Limits) -> None:
        self.router = Router(mappings)
        self.decoders: list[Decoder] = [build_decoder(m, limits) for m in mappings]

    @classmethod
    def from_settings(
        cls, mappings: Sequence[MappingSettings], max_future_seconds: float, max_past_days: float
    ) -> Processor:
        return cls(
            mappings,
            Limits(timedelta(seconds=max_future_seconds), timedelta(days=max_past_days)),
        )

    def add(self, batch: Batch, message: Message) -> None:
        """Decode one message into `batch`."""
        index = len(batch.messages)
        batch.messages.append(message)
        routed = self.router.route(message.topic)
        if routed is None:
            batch.quarantine.append(
                Quarantined(
                    message.received_at,
                    message.topic,
                    message.payload,
                    NO_MAPPING,
                    "no mapping matches this topic",
                    None,
                )
            )
            return
        decoder = self.decoders[routed[0]]
        decoded = decoder.decode(message.payload, routed[1], message.received_at)
        readings = decoded.readings
        if readings:
            batch.readings.extend(readings)
            batch.origins.extend([index] * len(readings))
        if decoded.problems:
            first = decoded.problems[0]
            detail = "; ".join(p.detail for p in decoded.problems[:5])
            if len(decoded.problems) > 5:
                detail += f"; and {len(decoded.problems) - 5} more"
            batch.quarantine.append(
                Quarantined(
                    message.received_at,
                    message.topic,
                    message.payload,
                    first.reason,
                    detail[:1000],
                    decoder.name,
                )
            )

    def batch(self, messages: Iterable[Message]) -> Batch:
        batch = Batch()
        for message in messages:
            self.add(batch, message)
        return batch
