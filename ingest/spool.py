"""The local spool: batches wait on disk, in order, while the database is down.

A batch is appended and fsynced before its messages are acknowledged, so a `kill -9` loses
nothing; on restart the spool is replayed first. Segment files `NNNNNNNNNNNN.spool` hold records
`<length u32><crc32 u32><orjson body>`. An append is whole or did not happen: a short write is
finished, and a write the disk refuses (`ENOSPC`, `EDQUOT`, any I/O error) is rolled back
(truncated to the size before the record, fsynced) before `SpoolDiskFull` is raised, so a torn
tail is only ever a record that was never acknowledged; it is cut off at open. A record that is
complete but fails its checksum, or a batch the database refuses on replay, is set aside in
`dead/` (see `ingest.deadletters`) and the records after it are still read. A segment is deleted
only after all its batches are committed or set aside. When the spool would pass its size limit
(dead letters included), `append` raises SpoolFull and the caller stops acknowledging.
"""

from __future__ import annotations

import base64
import errno
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from ingest.batch import Batch, Message, Quarantined, StatusReport
from ingest.deadletters import DeadLetters
from ingest.durable import fsync_dir

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")
_SEGMENT_BYTES = 16 << 20
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BODY_START = b'{"r":'  # every record body starts so (orjson keeps the keys in order)
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class SpoolFull(Exception):
    """Appending would pass the spool's size limit."""


class SpoolDiskFull(SpoolFull):
    """The spool's disk refused the write (full, over quota, or an I/O error); nothing of the
    record is left on disk."""


@dataclass(frozen=True)
class Record:
    """One record read back from a segment: a batch, or bytes that could not be read as one."""

    offset: int
    raw: bytes  # the whole record, header included (or the unreadable bytes)
    batch: Batch | None
    problem: str = ""  # why `batch` is None


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.dead = DeadLetters(directory / "dead")
        self._segments: list[Path] = []
        self._sizes: dict[Path, int] = {}
        self._oldest: float | None = None  # wall time of the oldest spooled batch
        self._fh: int | None = None
        self._active: Path | None = None
        self.disk_error: str | None = None  # why the last append failed on the disk, if it did

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
        self.dead.open()
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
        """Durably append a batch (fsync), or raise SpoolFull / SpoolDiskFull having left
        nothing of it on disk."""
        body = _encode(batch)
        record = _HEADER.pack(len(body), zlib.crc32(body)) + body
        if self.size + self.dead.size + len(record) > self.max_bytes:
            raise SpoolFull(
                f"spool at {self.size + self.dead.size} of {self.max_bytes} bytes"
                f" (ingest.spool_max_bytes)"
            )
        fh, active = self._fh, self._active
        try:
            if fh is None or active is None or self._sizes[active] >= _SEGMENT_BYTES:
                fh, active = self._rotate()
            _write_all(fh, record)
            os.fsync(fh)
        except OSError as exc:
            self._roll_back(exc)
            raise SpoolDiskFull(self.disk_error) from exc
        self.disk_error = None
        self._sizes[active] += len(record)
        if self._oldest is None:
            self._oldest = time.time()

    def _roll_back(self, exc: OSError) -> None:
        """Cut the active segment back to its last whole record, durably."""
        full = exc.errno in _DISK_FULL
        self.disk_error = (
            f"spool disk full ({os.strerror(exc.errno or errno.ENOSPC)}) in {self.directory}"
            if full
            else f"spool write failed in {self.directory}: {exc}"
        )
        if self._fh is None or self._active is None:
            return
        try:
            os.ftruncate(self._fh, self._sizes[self._active])
            os.fsync(self._fh)
        except OSError as again:
            # The tail may hold part of this (unacknowledged) record: seal the segment so
            # nothing is appended behind it; reading it back sets those bytes aside.
            log.error("spool %s: cannot roll back a failed write: %s", self._active, again)
            self._seal()

    # --- replay -----------------------------------------------------------------------------

    def segments(self) -> list[Path]:
        """The segments to replay, oldest first. The active one is sealed, so whatever is
        appended during the replay lands in a new segment."""
        self._seal()
        return list(self._segments)

    def read(self, segment: Path) -> Iterator[Batch]:
        """The batches of a segment (what cannot be read is skipped: see `records`)."""
        for record in _records(segment):
            if record.batch is not None:
                yield record.batch

    def records(self, segment: Path) -> Iterator[Record]:
        """Every record of a segment in order, readable or not."""
        return _records(segment)

    def set_aside(self, segment: Path, record: Record, error: str) -> None:
        """Keep a record that cannot be replayed in `dead/`, durably, with why."""
        self.dead.add(segment.name, record.offset, record.raw, record.batch, error)

    def consumed(self, segment: Path) -> None:
        """Every batch of `segment` is committed (or set aside): delete it."""
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
        fh = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fsync_dir(self.directory)  # the new file's name is durable too
        except OSError:
            os.close(fh)
            path.unlink(missing_ok=True)
            raise
        self._fh = fh
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
        """Cut off a torn last record (its length runs past the end of the file: an append a
        crash interrupted, never acknowledged). Bad records with more after them stay, to be
        set aside at replay. Returns the segment's size."""
        data = segment.read_bytes()
        pos = 0
        while pos + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, pos)
            end = pos + _HEADER.size + length
            if end <= len(data) and zlib.crc32(data[pos + _HEADER.size : end]) == crc:
                pos = end
                continue
            following = _next_record(data, pos + 1)
            if following is None and end > len(data):
                break  # torn tail
            pos = len(data) if following is None else following
        if pos < len(data):
            log.warning("spool %s: cutting off %d bytes of a torn record", segment, len(data) - pos)
            with segment.open("r+b") as fh:
                fh.truncate(pos)
                os.fsync(fh.fileno())
        return pos


def _write_all(fh: int, data: bytes) -> None:
    """os.write may write less than asked (a nearly full disk, a signal): go on until all is
    written or the disk refuses with an error."""
    view = memoryview(data)
    while view:
        written = os.write(fh, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, "no byte written")
        view = view[written:]


def _valid_at(data: bytes, pos: int) -> int | None:
    """End of a whole record with a good checksum at `pos`, else None."""
    if pos + _HEADER.size > len(data):
        return None
    length, crc = _HEADER.unpack_from(data, pos)
    end: int = pos + _HEADER.size + length
    if end > len(data) or zlib.crc32(data[pos + _HEADER.size : end]) != crc:
        return None
    return end


def _next_record(data: bytes, start: int) -> int | None:
    """Offset of the next whole record after corrupt bytes: a body start with a header in
    front of it whose length and checksum agree."""
    find = start + _HEADER.size
    while True:
        found = data.find(_BODY_START, find)
        if found < 0:
            return None
        pos = found - _HEADER.size
        if pos >= start and _valid_at(data, pos) is not None:
            return pos
        find = found + 1


def _records(segment: Path) -> Iterator[Record]:
    data = segment.read_bytes()
    pos = 0
    while pos < len(data):
        end = _valid_at(data, pos)
        if end is None:
            following = _next_record(data, pos + 1)
            stop = len(data) if following is None else following
            log.error(
                "spool %s: %d corrupt bytes at byte %d; setting them aside and reading on",
                segment,
                stop - pos,
                pos,
            )
            yield Record(pos, data[pos:stop], None, "corrupt record (checksum or length)")
            pos = stop
            continue
        raw = data[pos:end]
        try:
            batch = _decode(raw[_HEADER.size :])
        except (ValueError, KeyError, TypeError) as exc:
            yield Record(pos, raw, None, f"unreadable record: {exc}")
        else:
            yield Record(pos, raw, batch)
        pos = end


def _micros(when: datetime) -> int:
    return (when - _EPOCH) // timedelta(microseconds=1)


def _time(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def decode_record(raw: bytes) -> Batch:
    """The batch of a whole record (header included), as a dead letter keeps it."""
    return _decode(raw[_HEADER.size :])


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
            # Statuses (status and last-will topics) ride with their batch; older records
            # have none.
            "s": [(d, up, c, _micros(r), o) for d, up, c, r, o in batch.statuses],
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
        statuses=[StatusReport(d, up, c, _time(r), o) for d, up, c, r, o in doc.get("s", ())],
    )


def _quarantined_extra(q: Quarantined) -> tuple[str, int | None, str | None]:
    """Source, whole size and hash of a quarantined payload (records of older versions lack
    them)."""
    return q.source, q.size, q.sha256.hex() if q.sha256 is not None else None


def _quarantined_fields(fields: list[Any]) -> list[Any]:
    if len(fields) > 8 and fields[8] is not None:
        fields[8] = bytes.fromhex(fields[8])
    return fields
