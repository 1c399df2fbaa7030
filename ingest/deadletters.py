"""Dead letters: spool records that cannot be replayed, set aside in `<spool_dir>/dead/`.

A batch the database refuses on replay for a reason other than being down, or bytes of a segment
that fail their checksum, are written here (one JSON file each, fsynced before the segment is
deleted) with the error, so the replay goes on and nothing acknowledged is deleted.
`pantau quarantine dead-letters` lists them, shows one, and replays the batches (a file is
removed once its batch is committed).
"""

from __future__ import annotations

import base64
import logging
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ingest.batch import Batch
from ingest.decoders import UNREGISTERED
from ingest.durable import replace_file
from ingest.writer import WriteFailed, Writer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeadLetter:
    path: Path
    set_aside_at: datetime
    kind: str  # "refused" (a batch the database would not take) or "corrupt" (unreadable bytes)
    error: str
    segment: str
    offset: int
    readings: int
    messages: int
    devices: list[str]
    raw: bytes

    @property
    def name(self) -> str:
        return self.path.stem

    def batch(self) -> Batch | None:
        """The batch, for a record that was readable; None for corrupt bytes."""
        if self.kind != "refused":
            return None
        from ingest.spool import decode_record

        return decode_record(self.raw)


class DeadLetters:
    """The `dead/` directory next to the spool's segments."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._size = 0

    def open(self) -> None:
        self._size = self._scan()
        if self._size:
            log.warning(
                "%d dead letters (%d bytes) in %s: see `pantau quarantine dead-letters`",
                len(self.paths()),
                self._size,
                self.directory,
            )

    @property
    def size(self) -> int:
        """Bytes in dead letters (rescanned while there are any: the CLI may remove some)."""
        if self._size:
            self._size = self._scan()
        return self._size

    def paths(self) -> list[Path]:
        return sorted(self.directory.glob("*.json")) if self.directory.is_dir() else []

    def _scan(self) -> int:
        total = 0
        for path in self.paths():
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                continue  # removed meanwhile
        return total

    def add(self, segment: str, offset: int, raw: bytes, batch: Batch | None, error: str) -> Path:
        """Write one dead letter durably (temp file, fsync, rename, fsync the directory). The
        name comes from the record itself, so setting the same record aside twice (a replay
        interrupted and started over) keeps one file."""
        self.directory.mkdir(parents=True, exist_ok=True)
        stem = Path(segment).stem
        name = f"{stem}-{offset:010d}-{zlib.crc32(raw):08x}"
        doc: dict[str, Any] = {
            "set_aside_at": datetime.now(UTC).isoformat(),
            "kind": "corrupt" if batch is None else "refused",
            "error": error,
            "segment": segment,
            "offset": offset,
            "readings": len(batch.readings) if batch else 0,
            "messages": len(batch.messages) if batch else 0,
            "devices": sorted(batch.devices())[:50] if batch else [],
            "record": base64.b64encode(raw).decode(),
        }
        data = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
        path = self.directory / f"{name}.json"
        replace_file(path, data)
        self._size = self._scan()
        log.error(
            "spool %s byte %d set aside as dead letter %s: %s", segment, offset, path.name, error
        )
        return path

    def entries(self) -> list[DeadLetter]:
        out = []
        for path in self.paths():
            try:
                doc = orjson.loads(path.read_bytes())
                out.append(
                    DeadLetter(
                        path,
                        datetime.fromisoformat(doc["set_aside_at"]),
                        doc["kind"],
                        doc["error"],
                        doc["segment"],
                        doc["offset"],
                        doc["readings"],
                        doc["messages"],
                        doc["devices"],
                        base64.b64decode(doc["record"]),
                    )
                )
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("dead letter %s cannot be read: %s", path, exc)
        return out

    def remove(self, letter: DeadLetter) -> None:
        letter.path.unlink(missing_ok=True)
        self._size = self._scan()


@dataclass
class ReplayReport:
    replayed: list[str]
    readings: int
    failed: dict[str, str]  # name -> error
    corrupt: list[str]  # kept for inspection: nothing in them can be replayed


def replay(
    letters: DeadLetters, writer: Writer, *, registry: frozenset[str] | None
) -> ReplayReport:
    """Write the batch of every "refused" dead letter; remove each one once committed. With
    `registry` (policy `unregistered_devices = "quarantine"`), devices not in it are held."""
    report = ReplayReport([], 0, {}, [])
    for letter in letters.entries():
        batch = letter.batch()
        if batch is None:
            report.corrupt.append(letter.name)
            continue
        if registry is not None:
            strangers = batch.devices() - registry
            if strangers:
                batch.hold_devices(strangers, UNREGISTERED, "not in the registry: ")
        try:
            result = writer.write(batch)
        except WriteFailed as exc:
            report.failed[letter.name] = str(exc)
            continue
        letters.remove(letter)
        report.replayed.append(letter.name)
        report.readings += result.written
    return report
