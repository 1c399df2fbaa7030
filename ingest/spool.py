"""The local spool: batches wait on disk, in order, while the database is down.

A batch is appended and fsynced before its messages are acknowledged, so a `kill -9` loses
nothing; on restart the spool is replayed first. Segment files `NNNNNNNNNNNN.spool` hold records
`<length u32><crc32 u32><orjson body>`; a torn last record (a crash mid-append) is cut off at
open. A segment is deleted only after all its batches are committed. When the spool would pass
its size limit, `append` raises SpoolFull and the caller stops acknowledging.
"""

from __future__ import annotations

import base64
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from ingest.batch import Batch, Message, Quarantined

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")
_SEGMENT_BYTES = 16 << 20
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SpoolFull(Exception):
    """Appending would pass the spool's size limit."""


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._segments: list[Path] = []
        self._sizes: dict[Path, int] = {}
        self._oldest: float | None = None  # wall time of the oldest spooled batch
        self._fh: int | None = None
        self._active: Path | None = None

    # --- state ----------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return sum(self._sizes.values())

    @property
    def empty(self) -> bool:
        return not self._segments

    def oldest_age(self) -> float:
        return 0.0 if self._oldest is None else max(0.0, time.time() - self._oldest)

    # --- lifecycle --------------------------------------------------------------------------

    def open(self) -> None:
        """Find the segments left by an earlier run and cut off a torn last record."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._segments = sorted(self.directory.glob("*.spool"))
        for segment in self._segments:
            self._sizes[segment] = self._repair(segment)
        self._segments = [s for s in self._segments if self._sizes[s] > 0 or self._drop(s)]
        if self._segments:
            self._oldest = self._segments[0].stat().st_mtime
            log.warning(
                "spool holds %d bytes in %d segments from an earlier run; replaying them first",
                self.size,
                len(self._segments),
            )

    def close(self) -> None:
        self._seal()

    # --- writing ----------------------------------------------------------------------------

    def append(self, batch: Batch) -> None:
        """Durably append a batch (fsync) or raise SpoolFull."""
        body = _encode(batch)
        record = _HEADER.pack(len(body), zlib.crc32(body)) + body
        if self.size + len(record) > self.max_bytes:
            raise SpoolFull(f"spool at {self.size} of {self.max_bytes} bytes")
        fh, active = self._fh, self._active
        if fh is None or active is None or self._sizes[active] >= _SEGMENT_BYTES:
            fh, active = self._rotate()
        os.write(fh, record)
        os.fsync(fh)
        self._sizes[active] += len(record)
        if self._oldest is None:
            self._oldest = time.time()

    # --- replay -----------------------------------------------------------------------------

    def segments(self) -> list[Path]:
        """The segments to replay, oldest first. The active one is sealed, so whatever is
        appended during the replay lands in a new segment."""
        self._seal()
        return list(self._segments)

    def read(self, segment: Path) -> Iterator[Batch]:
        return _read(segment)

    def consumed(self, segment: Path) -> None:
        """Every batch of `segment` is committed: delete it."""
        if segment == self._active:
            self._seal()
        self._drop(segment)
        self._segments.remove(segment)
        self._oldest = self._segments[0].stat().st_mtime if self._segments else None

    # --- internals --------------------------------------------------------------------------

    def _rotate(self) -> tuple[int, Path]:
        self._seal()
        number = int(self._segments[-1].stem) + 1 if self._segments else 1
        path = self.directory / f"{number:012d}.spool"
        self._fh = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the new file's name is durable too
        finally:
            os.close(dir_fd)
        self._active = path
        self._segments.append(path)
        self._sizes[path] = 0
        return self._fh, path

    def _seal(self) -> None:
        if self._fh is not None:
            os.close(self._fh)
            self._fh = None
            self._active = None

    def _drop(self, segment: Path) -> bool:
        segment.unlink(missing_ok=True)
        self._sizes.pop(segment, None)
        return False

    @staticmethod
    def _repair(segment: Path) -> int:
        """Length of the valid prefix of a segment; anything after it is cut off."""
        data = segment.read_bytes()
        good = 0
        while good + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, good)
            end = good + _HEADER.size + length
            if end > len(data) or zlib.crc32(data[good + _HEADER.size : end]) != crc:
                break
            good = end
        if good < len(data):
            log.warning(
                "spool %s: cutting off %d bytes of a torn record", segment, len(data) - good
            )
            with segment.open("r+b") as fh:
                fh.truncate(good)
                os.fsync(fh.fileno())
        return good


def _read(segment: Path) -> Iterator[Batch]:
    data = segment.read_bytes()
    pos = 0
    while pos + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, pos)
        body = data[pos + _HEADER.size : pos + _HEADER.size + length]
        if len(body) != length or zlib.crc32(body) != crc:
            log.error("spool %s: corrupt record at byte %d; skipping the rest", segment, pos)
            return
        yield _decode(body)
        pos += _HEADER.size + length


def _micros(when: datetime) -> int:
    return (when - _EPOCH) // timedelta(microseconds=1)


def _time(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _encode(batch: Batch) -> bytes:
    # Messages are kept for the topic/payload of rows the database may refuse at replay.
    return orjson.dumps(
        {
            "r": [(_micros(t), d, m, v) for t, d, m, v in batch.readings],
            "o": batch.origins,
            "m": [
                (m.topic, base64.b64encode(m.payload).decode(), _micros(m.received_at))
                for m in batch.messages
            ],
            "q": [
                (
                    _micros(q.received_at),
                    q.topic,
                    base64.b64encode(q.payload).decode(),
                    q.reason,
                    q.detail,
                    q.mapping,
                    *_quarantined_extra(q),
                )
                for q in batch.quarantine
            ],
        }
    )


def _decode(body: bytes) -> Batch:
    doc = orjson.loads(body)
    return Batch(
        readings=[(_time(t), d, m, v) for t, d, m, v in doc["r"]],
        origins=doc["o"],
        messages=[Message(t, base64.b64decode(p), _time(r)) for t, p, r in doc["m"]],
        quarantine=[
            Quarantined(_time(r), t, base64.b64decode(p), reason, detail, mapping, *extra)
            for r, t, p, reason, detail, mapping, *extra in map(_quarantined_fields, doc["q"])
        ],
    )


def _quarantined_extra(q: Quarantined) -> tuple[str, int | None, str | None]:
    """Source, whole size and hash of a quarantined payload (records of older versions lack
    them)."""
    return q.source, q.size, q.sha256.hex() if q.sha256 is not None else None


def _quarantined_fields(fields: list[Any]) -> list[Any]:
    if len(fields) > 8 and fields[8] is not None:
        fields[8] = bytes.fromhex(fields[8])
    return fields
