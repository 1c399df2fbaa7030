"""The ingest layout: which MQTT sessions and spools `ingest.processes` uses, and what a change of
it leaves behind.

With `ingest.processes` = 1 the service's own pipeline uses client id `<mqtt.client_id>` and the
spool dir itself; with N > 1 process i uses `<mqtt.client_id>-<i>` and `<spool_dir>/<i>`. When
the operator changes N (or `mqtt.client_id`) and restarts, the sessions and spools of the old
layout are *retired*: their spools hold readings already acknowledged, and the broker keeps their
sessions, routing them a share of the shared subscription (eclipse/mosquitto issue 1747).

At each start, before any pipeline opens its spool, `prepare`:
- adopts every spool that is not the new layout's: its segments are moved (renamed, under fresh
  numbers) into a surviving spool, which replays them as after a database outage (idempotent
  writes: order does not matter); its dead letters go to `<spool_dir>/dead`, where
  `pantau quarantine dead-letters` reads them. Found by scanning, so no record is needed for it;
- writes the record `<spool_dir>/layout.json` (atomically): the sessions of this layout with the
  filters they subscribe to, and the retired sessions still to drain (ingest/retire.py takes
  what the broker queued for them and ends them, then `Record.done` removes them).

Without a record (the first start after an upgrade), the sessions to retire are guessed from the
spool directories: `<client_id>-<i>` for each `<spool_dir>/<i>` the layout does not use, and
`<client_id>` when N > 1 (a session that does not exist costs one connection to find out).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from ingest.durable import fsync_dir, replace_file
from pantau.settings import Settings

log = logging.getLogger(__name__)

RECORD = "layout.json"
DEFAULT_GROUP = "pantau"


@dataclass(frozen=True)
class Member:
    """One pipeline of a layout: its MQTT session and its spool."""

    client_id: str
    spool_dir: Path


def members(settings: Settings) -> list[Member]:
    """The sessions and spools of the layout `settings` asks for."""
    count = settings.ingest.processes
    base, cid = settings.ingest.spool_dir, settings.mqtt.client_id
    if count == 1:
        return [Member(cid, base)]
    return [Member(f"{cid}-{i}", base / str(i)) for i in range(count)]


def filters(settings: Settings, member_count: int | None = None) -> list[str]:
    """The topic filters the layout's sessions subscribe to."""
    from ingest.topics import Router

    count = settings.ingest.processes if member_count is None else member_count
    group = settings.mqtt.shared_group or (DEFAULT_GROUP if count > 1 else None)
    return Router(settings.ingest.mappings).filters(group)


@dataclass
class Prepared:
    adopted_segments: int = 0
    adopted_bytes: int = 0
    retiring: dict[str, list[str]] = field(default_factory=dict)


class Record:
    """`<spool_dir>/layout.json`: this layout's sessions and the retired ones still to drain.
    Written by one process at a time (the service at start, then the pipeline that drains)."""

    def __init__(self, spool_dir: Path) -> None:
        self.path = spool_dir / RECORD
        self._lock = threading.Lock()

    def load(self) -> dict[str, dict[str, list[str]]] | None:
        """{"sessions": {id: filters}, "retiring": {id: filters}}, or None without a record."""
        try:
            doc = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            log.error("cannot read %s (%s); guessing the previous layout", self.path, exc)
            return None
        return {
            "sessions": dict(doc.get("sessions", {})),
            "retiring": dict(doc.get("retiring", {})),
        }

    def retiring(self) -> dict[str, list[str]]:
        doc = self.load()
        return {} if doc is None else doc["retiring"]

    def write(self, doc: dict[str, dict[str, list[str]]]) -> None:
        """Durably replace the record (temp file, fsync, rename, fsync the directory)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(self.path, orjson.dumps({"version": 1, **doc}, option=orjson.OPT_INDENT_2))

    def done(self, client_id: str) -> None:
        """The retired session `client_id` is drained and ended: forget it."""
        with self._lock:
            doc = self.load() or {"sessions": {}, "retiring": {}}
            if doc["retiring"].pop(client_id, None) is not None:
                self.write(doc)


def prepare(settings: Settings, *, everything: bool = False) -> Prepared:
    """Adopt the spools other layouts left, and record this layout with the sessions to retire.
    Call it before any pipeline of this layout opens its spool.

    `everything` (`pantau retire`, the instance retired for good): every spool goes into
    `<spool_dir>` itself, and every session the instance may have is to retire."""
    base = settings.ingest.spool_dir
    configured = members(settings)
    if everything:
        ingest = settings.ingest.model_copy(update={"processes": 1})
        settings = settings.model_copy(update={"ingest": ingest})
    current = [] if everything else members(settings)
    out = Prepared()
    base.mkdir(parents=True, exist_ok=True)
    record = Record(base)
    previous = record.load()
    both = list(dict.fromkeys(filters(settings, 1) + filters(settings, 2)))
    if previous is None:  # guessed before the adoption below removes retired directories
        retiring = {cid: both for cid in _guessed_sessions(settings)}
    else:
        retiring = {**previous["sessions"], **previous["retiring"]}
    if everything:
        for member in [*configured, Member(settings.mqtt.client_id, base)]:
            retiring.setdefault(member.client_id, both)
    for source, target in _retired_spools(settings):
        segments, size = _adopt(source, target, base / "dead")
        if segments:
            log.warning(
                "spool %s of an earlier ingest.processes layout: %d segments (%d bytes) of "
                "acknowledged readings moved into %s, replayed from there",
                source,
                segments,
                size,
                target,
            )
        out.adopted_segments += segments
        out.adopted_bytes += size

    ids = {m.client_id for m in current}
    out.retiring = {cid: f for cid, f in retiring.items() if cid not in ids}
    mine = filters(settings)
    record.write({"sessions": {m.client_id: mine for m in current}, "retiring": dict(out.retiring)})
    if out.retiring:
        log.warning(
            "MQTT sessions of an earlier ingest layout to drain and end: %s",
            ", ".join(sorted(out.retiring)),
        )
    return out


def _retired_spools(settings: Settings) -> list[tuple[Path, Path]]:
    """(spool dir no longer used, the surviving spool dir that adopts its segments)."""
    base, count = settings.ingest.spool_dir, settings.ingest.processes
    out: list[tuple[Path, Path]] = []
    if count > 1 and any(base.glob("*.spool")):
        out.append((base, base / "0"))
    for index, path in _numbered(base):
        if count == 1:
            out.append((path, base))
        elif index >= count:
            out.append((path, base / str(index % count)))
    return out


def _numbered(base: Path) -> list[tuple[int, Path]]:
    if not base.is_dir():
        return []
    return sorted((int(p.name), p) for p in base.iterdir() if p.name.isdigit() and p.is_dir())


def _guessed_sessions(settings: Settings) -> list[str]:
    cid, count = settings.mqtt.client_id, settings.ingest.processes
    found = [f"{cid}-{i}" for i, _ in _numbered(settings.ingest.spool_dir)]
    if count > 1:
        found.append(cid)
    return found


def _adopt(source: Path, target: Path, dead: Path) -> tuple[int, int]:
    """Move `source`'s segments into `target` under numbers after target's own, and its dead
    letters into `dead`; remove `source` when it is a retired process's (numbered) directory.
    Each move is a rename of one file, made durable before the next: a crash half-way leaves
    every segment in exactly one of the two places."""
    segments = sorted(source.glob("*.spool"))
    size = 0
    if segments:
        target.mkdir(parents=True, exist_ok=True)
        number = _last_number(target)
        for segment in segments:
            number += 1
            moved = target / f"{number:012d}.spool"
            if moved.exists():  # never overwrite a segment
                number = _last_number(target) + 1
                moved = target / f"{number:012d}.spool"
            size += segment.stat().st_size
            os.rename(segment, moved)
            fsync_dir(target)
            fsync_dir(source)
    if source != dead.parent:
        letters = sorted((source / "dead").glob("*.json"))
        if letters:
            dead.mkdir(parents=True, exist_ok=True)
            for letter in letters:
                kept = dead / letter.name
                if kept.exists():  # the same record (the name holds its checksum)
                    letter.unlink()
                else:
                    os.rename(letter, kept)
                fsync_dir(dead)
            log.warning("moved %d dead letters from %s to %s", len(letters), source, dead)
    if source.name.isdigit():
        for directory in (source / "dead", source):
            try:
                directory.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:  # something else in it: left as it is
                log.warning("retired spool directory %s not removed: %s", directory, exc)
                break
    return len(segments), size


def _last_number(directory: Path) -> int:
    numbers = [int(p.stem) for p in directory.glob("*.spool") if p.stem.isdigit()]
    return max(numbers, default=0)
