"""The cameras as the API and the CLI see them: each camera device with its stream settings
(URL always redacted), its newest check and the detector's view; setting a camera's stream,
checked and audited; its snapshot, or the placeholder that replaces a stale or down one."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field

from devices.models import Problem
from devices.registry import Invalid, NotFound, RegistryError
from pantau.cliapp import WIB
from streams.report import DOWN_STATES
from streams.snapshots import SnapshotStore, placeholder_jpeg, snapshot_age
from streams.urls import redact

MAX_URL = 2048


STALE_INTERVALS = 3  # a picture older than this many probe intervals is stale
# Controls (C0, DEL, C1) and spaces, as pantau.openapi spells them for both regex engines.
_NOT = r"\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# rtsp:// or rtsps://, optional userinfo up to the last `@` (camera passwords hold `@`, `#`, `?`
# unencoded), then a host that does not start with `/ ? # :`.
URL_PATTERN = rf"^rtsps?://(?:[^{_NOT}]*@)?[^{_NOT}@/?#:][^{_NOT}@]*$"
_URL = re.compile(URL_PATTERN.removesuffix("$") + r"\Z")
URL_EXPECTED = (
    "expected an rtsp:// or rtsps:// URL with a host, at most "
    f"{MAX_URL} characters, no spaces or control characters, "
    "e.g. rtsp://user:password@10.20.0.5:554/Streaming/Channels/101"
)


class NotACamera(RegistryError):
    """A device that cannot have a stream (not a camera, or retired)."""

    status = 409


class Thresholds(BaseModel):
    """How a camera is judged; null takes the `[streams]` setting of the same name."""

    model_config = ConfigDict(extra="forbid")

    black_luma: float | None = Field(
        None, ge=0, le=255, description="mean luma (0-255) at or below which a picture is black"
    )
    covered_ratio: float | None = Field(
        None, gt=0, lt=1, description="contrast and edges below this share of the baseline"
    )
    frozen_samples: int | None = Field(
        None, ge=2, le=100, description="unchanged samples in a row that make a picture frozen"
    )
    bad_samples: int | None = Field(
        None, ge=1, le=100, description="bad samples in a row before black, covered or blurred"
    )


class CameraIn(BaseModel):
    """A camera's stream, replaced whole (what is left out takes its default)."""

    model_config = ConfigDict(extra="forbid")

    # Checked by `check_url`, not by pydantic: a refused URL is never echoed (it may hold a
    # password). The schema states the same rule.
    rtsp_url: str = Field(
        description="the stream, credentials included; stored, never shown (redacted as "
        "`rtsp://***@host/...`)",
        json_schema_extra={"pattern": URL_PATTERN, "maxLength": MAX_URL},
        examples=["rtsp://pantau:rahasia@10.20.0.5:554/Streaming/Channels/101"],
    )
    probe_interval_seconds: float = Field(
        10.0, ge=1, le=3600, description="seconds per check (1 to 3600)"
    )
    enabled: bool = Field(True, description="probe it (false: keep the settings, do not probe)")
    thresholds: Thresholds = Field(default_factory=Thresholds)


def check_url(url: str, field: str = "rtsp_url") -> None:
    """Invalid (422) unless `url` is an RTSP URL; the message never repeats it."""
    if len(url) > MAX_URL or _URL.fullmatch(url) is None:
        raise Invalid([Problem(field=field, message=URL_EXPECTED)])


class Camera(BaseModel):
    device_id: str
    name: str | None
    kecamatan: str | None
    status: str = Field(description="the device's status in the registry")
    configured: bool = Field(description="has a stream (false: registered, no URL set yet)")
    rtsp_url: str | None = Field(description="redacted: `rtsp://***@host:554/path`")
    probe_interval_seconds: float | None
    enabled: bool | None
    thresholds: Thresholds
    version: int | None = Field(description="bumped by each change of the stream settings")
    updated_at: datetime | None
    state: str | None = Field(
        description="the newest check: ok, frozen, black, covered, blurred or offline; null "
        "when never checked"
    )
    reason: str | None = Field(
        description="offline: refused, auth, not_found, timeout, no_video, stalled, ended, error"
    )
    checked_at: datetime | None = Field(description="the newest check's time")
    since: datetime | None = Field(
        description="when the current outage started (the detector's), when there is one"
    )
    liveness: str | None = Field(
        description="the outage detector's view: unknown, up, late, down or paused"
    )
    connect_seconds: float | None
    codec: str | None
    width: int | None
    height: int | None
    fps: float | None = Field(description="from packet timestamps, in the newest check")
    bitrate_kbps: float | None
    decode_errors: int | None
    snapshot_age_seconds: int | None = Field(
        description="age of the latest picture on disk; null when there is none"
    )


_SELECT = """
SELECT d.device_id, d.name, d.kecamatan, d.status, d.device_type,
       c.device_id IS NOT NULL AS configured, c.rtsp_url, c.probe_interval_seconds, c.enabled,
       c.black_luma, c.covered_ratio, c.frozen_samples, c.bad_samples, c.version, c.updated_at,
       h.time AS checked_at, h.state, h.reason, h.connect_seconds, h.codec, h.width, h.height,
       h.fps, h.bitrate_kbps, h.decode_errors,
       l.state AS liveness, l.cause AS liveness_cause,
       COALESCE(o.started_at, CASE WHEN l.state = 'down' THEN l.since END) AS since
FROM devices d
LEFT JOIN cameras c ON c.device_id = d.device_id
LEFT JOIN LATERAL (
    SELECT * FROM camera_health x WHERE x.device_id = d.device_id ORDER BY x.time DESC LIMIT 1
) h ON true
LEFT JOIN device_liveness l ON l.device_id = d.device_id
LEFT JOIN outages o ON o.device_id = d.device_id AND o.kind = 'device' AND o.ended_at IS NULL
"""
_THRESHOLDS = ("black_luma", "covered_ratio", "frozen_samples", "bad_samples")
_FIELDS = tuple(
    name
    for name in Camera.model_fields
    if name not in ("rtsp_url", "thresholds", "snapshot_age_seconds")
)


def _camera(row: dict[str, Any], modified: float | None, now: float) -> Camera:
    return Camera(
        **{k: row[k] for k in _FIELDS},
        rtsp_url=redact(row["rtsp_url"]) if row["rtsp_url"] else None,
        thresholds=Thresholds(**{k: row[k] for k in _THRESHOLDS}),
        snapshot_age_seconds=None if modified is None else snapshot_age(modified, now),
    )


async def list_cameras(
    conn: psycopg.AsyncConnection, store: SnapshotStore, limit: int = 1000, offset: int = 0
) -> list[Camera]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        _SELECT + " WHERE d.device_type = 'camera' ORDER BY d.device_id LIMIT %s OFFSET %s",
        (limit, offset),
    )
    rows = await cur.fetchall()
    modified = await store.latest_modified([r["device_id"] for r in rows])
    now = time.time()
    return [_camera(r, modified.get(r["device_id"]), now) for r in rows]


async def _row(conn: psycopg.AsyncConnection, device_id: str) -> dict[str, Any]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(_SELECT + " WHERE d.device_id = %s", (device_id,))
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no device {device_id!r}")
    if row["device_type"] != "camera":
        raise NotFound(f"device {device_id!r} is a {row['device_type']}, not a camera")
    return row


async def get_camera(conn: psycopg.AsyncConnection, store: SnapshotStore, device_id: str) -> Camera:
    row = await _row(conn, device_id)
    modified = await store.latest_modified([device_id])
    return _camera(row, modified.get(device_id), time.time())


def _audited(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """A camera's row for the audit log (shown to admins): the URL redacted."""
    if row is None:
        return None
    data = {k: row[k] for k in ("probe_interval_seconds", "enabled", *_THRESHOLDS, "version")}
    return {"rtsp_url": redact(row["rtsp_url"]), **data}


async def set_camera(
    conn: psycopg.AsyncConnection, device_id: str, body: CameraIn, actor: str
) -> bool:
    """Create or replace the camera's stream settings, audited; True when created. Run it in a
    transaction (the device row is locked while it is checked)."""
    check_url(body.rtsp_url)
    cur = await conn.execute(
        "SELECT device_type, status FROM devices WHERE device_id = %s FOR UPDATE", (device_id,)
    )
    device = await cur.fetchone()
    if device is None:
        raise NotFound(f"no device {device_id!r}")
    if device[0] != "camera":
        raise NotACamera(
            f"device {device_id!r} is a {device[0]}, not a camera: only a device of type camera "
            "has a stream (register it with type camera)"
        )
    if device[1] == "retired":
        raise NotACamera(f"device {device_id!r} is retired: it is not probed any more")
    rows = conn.cursor(row_factory=dict_row)
    await rows.execute("SELECT * FROM cameras WHERE device_id = %s", (device_id,))
    before = await rows.fetchone()
    t = body.thresholds
    values = {
        "d": device_id,
        "url": body.rtsp_url,
        "interval": body.probe_interval_seconds,
        "enabled": body.enabled,
        "black": t.black_luma,
        "covered": t.covered_ratio,
        "frozen": t.frozen_samples,
        "bad": t.bad_samples,
    }
    await rows.execute(
        "INSERT INTO cameras (device_id, rtsp_url, probe_interval_seconds, enabled, black_luma,"
        " covered_ratio, frozen_samples, bad_samples)"
        " VALUES (%(d)s, %(url)s, %(interval)s, %(enabled)s, %(black)s, %(covered)s, %(frozen)s,"
        " %(bad)s)"
        " ON CONFLICT (device_id) DO UPDATE SET rtsp_url = EXCLUDED.rtsp_url,"
        " probe_interval_seconds = EXCLUDED.probe_interval_seconds, enabled = EXCLUDED.enabled,"
        " black_luma = EXCLUDED.black_luma, covered_ratio = EXCLUDED.covered_ratio,"
        " frozen_samples = EXCLUDED.frozen_samples, bad_samples = EXCLUDED.bad_samples,"
        " version = cameras.version + 1, updated_at = now()"
        " RETURNING *",
        values,
    )
    after = await rows.fetchone()
    assert after is not None  # noqa: S101 - INSERT ... RETURNING returns the row
    audited = _audited(after) or {}
    # whether the URL changed, which the redacted URLs may not show (a new password)
    audited["rtsp_url_changed"] = before is None or before["rtsp_url"] != after["rtsp_url"]
    old = _audited(before)
    await conn.execute(
        "INSERT INTO audit_log (actor, action, entity, entity_id, before, after)"
        " VALUES (%s, %s, 'camera', %s, %s, %s)",
        (
            actor,
            "create" if before is None else "update",
            device_id,
            Jsonb(old) if old else None,
            Jsonb(audited),
        ),
    )
    return before is None


def stored_config(row: dict[str, Any]) -> CameraIn:
    """What is stored now, as a body to change (the CLI's `set` changes only what it is given)."""
    return CameraIn(
        rtsp_url=row["rtsp_url"],
        probe_interval_seconds=row["probe_interval_seconds"],
        enabled=row["enabled"],
        thresholds=Thresholds(**{k: row[k] for k in _THRESHOLDS}),
    )


async def stored(conn: psycopg.AsyncConnection, device_id: str) -> CameraIn | None:
    rows = conn.cursor(row_factory=dict_row)
    await rows.execute("SELECT * FROM cameras WHERE device_id = %s", (device_id,))
    row = await rows.fetchone()
    return stored_config(row) if row else None


# -- the snapshot ---------------------------------------------------------------------------

Shown = Literal["latest", "down", "stale", "none"]


@dataclass(frozen=True)
class Snapshot:
    """What the snapshot endpoint serves: the latest picture, or a placeholder and why."""

    jpeg: bytes
    shown: Shown  # latest: the picture; down/stale/none: a placeholder instead
    state: str  # the newest check's state, or `unknown`
    since: datetime | None  # the current outage's start
    modified: float | None  # the latest picture's mtime, when it is served

    @property
    def placeholder(self) -> bool:
        return self.shown != "latest"

    def headers(self, now: float | None = None) -> dict[str, str]:
        from email.utils import formatdate

        headers = {"Cache-Control": "no-cache", "X-Camera-State": self.state}
        if self.since is not None:
            headers["X-Camera-Since"] = self.since.astimezone(WIB).isoformat()
        if self.modified is not None:
            headers["X-Snapshot-Age"] = str(snapshot_age(self.modified, now))
            headers["Last-Modified"] = formatdate(self.modified, usegmt=True)
        if self.placeholder:
            headers["X-Placeholder"] = self.shown
        return headers


async def snapshot(
    conn: psycopg.AsyncConnection,
    store: SnapshotStore,
    device_id: str,
    now: float | None = None,
) -> Snapshot:
    """The latest picture; the placeholder instead when the camera is down (its newest check
    or the detector says so), when the picture is older than STALE_INTERVALS probe intervals,
    or when there is none."""
    row = await _row(conn, device_id)
    now = time.time() if now is None else now
    state = row["state"] or "unknown"
    checked = row["checked_at"]
    picture = await store.latest(device_id)
    interval = row["probe_interval_seconds"] or 10.0
    since = row["since"]
    if state in DOWN_STATES or row["liveness"] == "down":
        if state == "offline":
            reason = row["reason"]
        elif state in DOWN_STATES:
            reason = state
        else:  # the detector's view: no reports (silent), or a cause older than this check
            reason = (row["liveness_cause"] or "").removeprefix("offline:") or None
        jpeg = placeholder_jpeg(device_id, row["name"], since, reason, checked_at=checked)
        return Snapshot(jpeg, "down", state, since, None)
    if picture is None:
        jpeg = placeholder_jpeg(device_id, row["name"], None, "no_snapshot", checked_at=checked)
        return Snapshot(jpeg, "none", state, since, None)
    if now - picture.modified > STALE_INTERVALS * interval:
        taken = datetime.fromtimestamp(picture.modified, UTC)
        jpeg = placeholder_jpeg(device_id, row["name"], taken, "stale", checked_at=checked)
        return Snapshot(jpeg, "stale", state, since, None)
    return Snapshot(picture.jpeg, "latest", state, since, picture.modified)


class HistoryEntry(BaseModel):
    taken_at: datetime = Field(description="when the picture was taken (WIB)")
    name: str = Field(description="its name in the URL: `.../snapshots/{name}.jpg` (UTC time)")
    bytes: int
    url: str


async def history(
    conn: psycopg.AsyncConnection, device_id: str, limit: int = 100
) -> list[HistoryEntry]:
    """The camera's kept snapshots, newest first."""
    await _row(conn, device_id)
    cur = await conn.execute(
        "SELECT taken_at, file_name, bytes FROM camera_snapshots WHERE device_id = %s"
        " ORDER BY taken_at DESC LIMIT %s",
        (device_id, limit),
    )
    found = []
    for taken_at, file_name, size in await cur.fetchall():
        name = str(file_name).removesuffix(".jpg")
        found.append(
            HistoryEntry(
                taken_at=taken_at.astimezone(WIB),
                name=name,
                bytes=size,
                url=f"/api/v1/cameras/{device_id}/snapshots/{name}.jpg",
            )
        )
    return found


async def history_picture(
    conn: psycopg.AsyncConnection, store: SnapshotStore, device_id: str, name: str
) -> tuple[datetime, bytes]:
    """One kept snapshot by its name; NotFound when it is not (or no longer) kept."""
    await _row(conn, device_id)
    cur = await conn.execute(
        "SELECT taken_at FROM camera_snapshots WHERE device_id = %s AND file_name = %s",
        (device_id, name + ".jpg"),
    )
    row = await cur.fetchone()
    picture = await store.history_file(device_id, name + ".jpg") if row else None
    if row is None or picture is None:
        raise NotFound(f"camera {device_id!r} has no snapshot {name} (kept: see /snapshots)")
    return row[0], picture.jpeg
