"""Snapshot files on disk: the latest JPEG of each camera, a bounded history indexed in
`camera_snapshots`, and the "offline since ..." placeholder served instead of a stale picture.

Layout: `<snapshot_dir>/<device_id>/latest.jpg` (replaced atomically: a reader never sees half a
file) and `<snapshot_dir>/<device_id>/<taken_at>.jpg` for the history, named by the UTC time
(`20261201T070300.123Z.jpg`). A device id is checked against the registry's id rule before it
becomes a path, so no id reaches outside the directory. File work runs off the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import psycopg
from prometheus_client import CollectorRegistry, Counter

from pantau.cliapp import WIB
from pantau.errors import PantauError
from pantau.ids import is_device_id
from streams.settings import StreamsSettings

log = logging.getLogger(__name__)

LATEST = "latest.jpg"
_HISTORY_NAME = re.compile(r"\A[0-9]{8}T[0-9]{6}\.[0-9]{3}Z\Z")  # without ".jpg"
_JPEG_MAGIC = b"\xff\xd8\xff"


class BadDeviceId(PantauError, ValueError):
    """A device id that is not one by the registry's rule: it never becomes a path."""


def history_name(taken_at: datetime) -> str:
    """A history snapshot's name (its file without `.jpg`): the UTC time to the millisecond."""
    t = taken_at.astimezone(UTC)
    return f"{t:%Y%m%dT%H%M%S}.{t.microsecond // 1000:03d}Z"


def is_history_name(name: str) -> bool:
    return _HISTORY_NAME.fullmatch(name) is not None


def _to_millisecond(t: datetime) -> datetime:
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


class SnapshotMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.saved = Counter(
            "pantau_camera_snapshots_saved_total",
            "Latest snapshots written to disk",
            registry=registry,
        )
        self.history = Counter(
            "pantau_camera_snapshots_history_total",
            "Snapshots that joined a camera's history",
            registry=registry,
        )
        self.pruned = Counter(
            "pantau_camera_snapshots_pruned_total",
            "History snapshots removed past streams.snapshot_history (files and rows)",
            registry=registry,
        )
        self.reencoded = Counter(
            "pantau_camera_snapshots_reencoded_total",
            "Snapshots over streams.snapshot_max_bytes, re-encoded smaller",
            registry=registry,
        )
        self.refused = Counter(
            "pantau_camera_snapshots_refused_total",
            "Snapshots not kept: not a JPEG, or still over streams.snapshot_max_bytes",
            ["reason"],
            registry=registry,
        )
        for reason in ("not_jpeg", "too_big"):
            self.refused.labels(reason)


@dataclass(frozen=True)
class Picture:
    jpeg: bytes
    modified: float  # the file's mtime (time.time())


class SnapshotStore:
    """The snapshot files of every camera under one directory (created on first write)."""

    def __init__(
        self,
        directory: Path,
        settings: StreamsSettings,
        metrics: SnapshotMetrics | None = None,
    ) -> None:
        self.directory = directory
        self.settings = settings
        self.metrics = metrics or SnapshotMetrics(CollectorRegistry())
        self._last_history: dict[str, datetime] = {}  # per camera; read from the table once
        self._locks: dict[str, asyncio.Lock] = {}

    def camera_dir(self, device_id: str) -> Path:
        """The camera's directory; BadDeviceId for anything that is not a device id."""
        if not isinstance(device_id, str) or not is_device_id(device_id):
            raise BadDeviceId(f"{device_id!r} is not a device id")
        path = self.directory / device_id
        if path.parent != self.directory or device_id in (".", ".."):  # belt and braces
            raise BadDeviceId(f"{device_id!r} is not a device id")
        return path

    async def save(
        self, conn: psycopg.AsyncConnection, device_id: str, taken_at: datetime, jpeg: bytes
    ) -> None:
        """Keep `jpeg` as the camera's latest picture, and in its history when the last one
        there is `snapshot_every_seconds` old or more (pruned past `snapshot_history`)."""
        folder = self.camera_dir(device_id)
        kept = await asyncio.to_thread(self._fit, jpeg)
        if kept is None:
            return
        lock = self._locks.setdefault(device_id, asyncio.Lock())
        async with lock:
            await asyncio.to_thread(_write_atomically, folder, LATEST, kept, taken_at)
            self.metrics.saved.inc()
            if device_id not in self._last_history:
                self._last_history[device_id] = await self._recover(conn, device_id, folder)
            taken_at = _to_millisecond(taken_at)
            last = self._last_history[device_id]
            if (taken_at - last).total_seconds() < self.settings.snapshot_every_seconds:
                return
            await self._add_history(conn, device_id, folder, taken_at, kept)

    async def _add_history(
        self,
        conn: psycopg.AsyncConnection,
        device_id: str,
        folder: Path,
        taken_at: datetime,
        jpeg: bytes,
    ) -> None:
        name = history_name(taken_at)
        await asyncio.to_thread(_write_atomically, folder, name + ".jpg", jpeg, taken_at)
        # The row and the pruning in one transaction; the pruned files go once it is committed
        # (a crash in between leaves files without rows, removed by the next start's recovery).
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO camera_snapshots (device_id, taken_at, file_name, bytes)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (device_id, taken_at) DO UPDATE"
                " SET file_name = EXCLUDED.file_name, bytes = EXCLUDED.bytes",
                (device_id, taken_at, name + ".jpg", len(jpeg)),
            )
            cur = await conn.execute(
                "DELETE FROM camera_snapshots WHERE device_id = %(d)s AND taken_at <= ("
                "  SELECT taken_at FROM camera_snapshots WHERE device_id = %(d)s"
                "  ORDER BY taken_at DESC OFFSET %(keep)s LIMIT 1) RETURNING file_name",
                {"d": device_id, "keep": self.settings.snapshot_history},
            )
            pruned = [str(row[0]) for row in await cur.fetchall()]
        self._last_history[device_id] = taken_at
        self.metrics.history.inc()
        if pruned:
            await asyncio.to_thread(_remove, folder, pruned)
            self.metrics.pruned.inc(len(pruned))

    async def _recover(
        self, conn: psycopg.AsyncConnection, device_id: str, folder: Path
    ) -> datetime:
        """After a start: the newest history time, and the table and the files made to agree
        (files without a row removed, rows without a file deleted)."""
        cur = await conn.execute(
            "SELECT taken_at, file_name FROM camera_snapshots WHERE device_id = %s",
            (device_id,),
        )
        rows = {str(name): taken for taken, name in await cur.fetchall()}
        on_disk = await asyncio.to_thread(_history_files, folder)
        orphans = sorted(on_disk - rows.keys())
        if orphans:
            await asyncio.to_thread(_remove, folder, orphans)
            log.info("camera %s: removed %d snapshot files without a row", device_id, len(orphans))
        missing = sorted(rows.keys() - on_disk)
        if missing:
            await conn.execute(
                "DELETE FROM camera_snapshots WHERE device_id = %s AND file_name = ANY(%s)",
                (device_id, missing),
            )
        kept = [taken for name, taken in rows.items() if name in on_disk]
        return max(kept) if kept else datetime.min.replace(tzinfo=UTC)

    def _fit(self, jpeg: bytes) -> bytes | None:
        """The JPEG as kept: as it is, re-encoded smaller when over the bound, or None."""
        limit = self.settings.snapshot_max_bytes
        if not jpeg.startswith(_JPEG_MAGIC):
            self.metrics.refused.labels("not_jpeg").inc()
            log.warning("snapshot refused: not a JPEG (%d bytes)", len(jpeg))
            return None
        if len(jpeg) <= limit:
            return jpeg
        smaller = shrink(jpeg, limit, self.settings.snapshot_quality)
        if smaller is None:
            self.metrics.refused.labels("too_big").inc()
            log.warning("snapshot refused: %d bytes, over %d even re-encoded", len(jpeg), limit)
            return None
        self.metrics.reencoded.inc()
        return smaller

    # -- reading (the API and the CLI) -----------------------------------------------------

    async def latest(self, device_id: str) -> Picture | None:
        return await asyncio.to_thread(_read, self.camera_dir(device_id) / LATEST)

    async def latest_modified(self, device_ids: list[str]) -> dict[str, float]:
        """The latest picture's mtime of each camera that has one (one thread hop for all)."""
        paths = {d: self.camera_dir(d) / LATEST for d in device_ids}
        return await asyncio.to_thread(_mtimes, paths)

    async def history_file(self, device_id: str, file_name: str) -> Picture | None:
        if not is_history_name(file_name.removesuffix(".jpg")):
            return None
        return await asyncio.to_thread(_read, self.camera_dir(device_id) / file_name)


def shrink(jpeg: bytes, limit: int, quality: int) -> bytes | None:
    """Re-encode at lower quality, then smaller, until it fits in `limit` bytes."""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return None
    for scale in (1.0, 0.75, 0.5, 0.35, 0.25):
        scaled = image
        if scale < 1.0:
            size = (max(1, int(image.shape[1] * scale)), max(1, int(image.shape[0] * scale)))
            scaled = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        for q in sorted({min(quality, 70), 50, 30}, reverse=True):
            ok, encoded = cv2.imencode(".jpg", scaled, [cv2.IMWRITE_JPEG_QUALITY, q])
            if ok and len(encoded) <= limit:
                return bytes(encoded.tobytes())
    return None


def _write_atomically(folder: Path, name: str, data: bytes, taken_at: datetime) -> None:
    """Write to a temporary file beside it and rename it over (atomic on one filesystem); the
    file's mtime is the time the picture was taken. No fsync: after a crash a latest picture
    is replaced within one check interval anyway."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".jpg", dir=folder)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        stamp = taken_at.timestamp()
        os.utime(tmp, (stamp, stamp))
        os.replace(tmp, folder / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _remove(folder: Path, names: list[str]) -> None:
    for name in names:
        if is_history_name(name.removesuffix(".jpg")):  # never anything else
            (folder / name).unlink(missing_ok=True)


def _history_files(folder: Path) -> set[str]:
    try:
        return {
            entry.name
            for entry in os.scandir(folder)
            if entry.name.endswith(".jpg") and is_history_name(entry.name.removesuffix(".jpg"))
        }
    except FileNotFoundError:
        return set()


def _read(path: Path) -> Picture | None:
    try:
        with path.open("rb") as file:  # one open: the size and mtime are of what is read
            modified = os.fstat(file.fileno()).st_mtime
            return Picture(file.read(), modified)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _mtimes(paths: dict[str, Path]) -> dict[str, float]:
    found = {}
    for device_id, path in paths.items():
        try:
            found[device_id] = path.stat().st_mtime
        except (FileNotFoundError, NotADirectoryError):
            continue
    return found


# -- the placeholder ------------------------------------------------------------------------

# Why a camera shows no picture, in the words an operator reads on the wall.
REASONS_ID: dict[str, str] = {
    "refused": "koneksi ditolak",
    "auth": "kata sandi ditolak",
    "not_found": "alamat aliran tidak ditemukan",
    "timeout": "tidak menjawab",
    "no_video": "tidak ada video",
    "stalled": "aliran macet",
    "ended": "aliran berhenti",
    "error": "kesalahan aliran",
    "frozen": "gambar beku",
    "black": "gambar hitam",
    "covered": "lensa tertutup",
    "blurred": "gambar buram",
    "stale": "gambar tidak diperbarui",
    "no_snapshot": "menunggu gambar pertama dari kamera",
    "disabled": "pemeriksaan dimatikan",
    "silent": "tidak ada laporan pemeriksaan",
}
_PICTURE_PROBLEMS = frozenset({"frozen", "black", "covered", "blurred"})

_W, _H = 1280, 720
_BACKGROUND = (40, 40, 40)  # BGR
_WHITE = (245, 245, 245)
_GREY = (185, 185, 185)
_RED = (60, 60, 225)
_AMBER = (40, 170, 240)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BOLD = cv2.FONT_HERSHEY_DUPLEX


def reason_words(reason: str | None) -> str:
    if not reason:
        return "sebab tidak diketahui"
    return REASONS_ID.get(reason, reason.replace("_", " "))


def wib(t: datetime) -> str:
    return f"{t.astimezone(WIB):%d-%m-%Y %H:%M} WIB"


def placeholder_jpeg(
    device_id: str,
    name: str | None,
    offline_since: datetime | None,
    reason: str | None,
    *,
    checked_at: datetime | None = None,
) -> bytes:
    """A 1280x720 JPEG that says, legibly from across the room, why there is no picture:
    "KAMERA OFFLINE", since when (WIB), which camera and the reason in Indonesian. Also the
    picture of a camera with no snapshot yet (`reason="no_snapshot"`). Cached: a wall asks for
    the same one every few seconds."""
    return _placeholder(device_id, name, offline_since, reason, checked_at)


@functools.lru_cache(maxsize=256)
def _placeholder(
    device_id: str,
    name: str | None,
    since: datetime | None,
    reason: str | None,
    checked_at: datetime | None,
) -> bytes:
    image = np.full((_H, _W, 3), _BACKGROUND, np.uint8)
    if reason == "no_snapshot":
        headline, since_word, colour = "BELUM ADA GAMBAR", "sejak", _GREY
    elif reason in _PICTURE_PROBLEMS or reason == "stale":
        headline, since_word, colour = "KAMERA BERMASALAH", "bermasalah sejak", _AMBER
        if reason == "stale":
            since_word = "gambar terakhir"
    else:
        headline, since_word, colour = "KAMERA OFFLINE", "offline sejak", _RED
    cv2.rectangle(image, (0, 0), (_W, 18), colour, -1)
    cv2.rectangle(image, (0, _H - 18), (_W, _H), colour, -1)
    _icon(image, (_W // 2, 150), colour)
    _centred(image, headline, 305, _BOLD, 3.0, 6, colour)
    if since is not None:
        _centred(image, f"{since_word} {wib(since)}", 395, _FONT, 1.6, 3, _WHITE)
    _centred(image, reason_words(reason), 475, _FONT, 1.6, 3, _WHITE)
    label = _printable(name) if name and name != device_id else ""
    _centred(image, label or device_id, 570, _FONT, 1.3, 2, _GREY)
    if label:
        _centred(image, device_id, 625, _FONT, 1.1, 2, _GREY)
    if checked_at is not None:
        _centred(image, f"terakhir diperiksa {wib(checked_at)}", 680, _FONT, 0.9, 2, _GREY)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:  # pragma: no cover - OpenCV encodes a plain image
        raise RuntimeError("OpenCV could not encode the placeholder")
    return bytes(encoded.tobytes())


def _printable(text: str) -> str:
    """One line of printable text (OpenCV 5 draws Latin letters with accents; what its font
    lacks shows as '?')."""
    return "".join(c for c in " ".join(text.split()) if c.isprintable())


def _centred(
    image: np.ndarray,
    text: str,
    baseline: int,
    font: int,
    scale: float,
    thickness: int,
    colour: tuple[int, int, int],
) -> None:
    """The text centred on the line, made smaller if it would not fit the width."""
    (width, _), _ = cv2.getTextSize(text, font, scale, thickness)
    room = _W - 80
    if width > room:
        scale *= room / width
        (width, _), _ = cv2.getTextSize(text, font, scale, thickness)
    cv2.putText(
        image, text, ((_W - width) // 2, baseline), font, scale, colour, thickness, cv2.LINE_AA
    )


def _icon(image: np.ndarray, centre: tuple[int, int], colour: tuple[int, int, int]) -> None:
    """A camera body with a slash through it."""
    x, y = centre
    cv2.rectangle(image, (x - 80, y - 45), (x + 40, y + 45), _GREY, 6, cv2.LINE_AA)
    lens = np.array([[x + 40, y - 15], [x + 85, y - 40], [x + 85, y + 40], [x + 40, y + 15]])
    cv2.polylines(image, [lens], True, _GREY, 6, cv2.LINE_AA)
    cv2.line(image, (x - 100, y + 70), (x + 100, y - 70), colour, 10, cv2.LINE_AA)


def snapshot_age(modified: float, now: float | None = None) -> int:
    """Whole seconds since the picture was taken (never negative)."""
    return max(0, int((now if now is not None else time.time()) - modified))
