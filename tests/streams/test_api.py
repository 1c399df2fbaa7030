"""The cameras API against a real Pantau and PostgreSQL: states set by writing camera_health rows
as the probes' worker does, credentials never in an answer, the stream's checks, the snapshot or
its placeholder with the headers a wall reads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import psycopg
import pytest

from pantau import auth
from pantau.settings import Settings
from streams.settings import StreamsSettings
from streams.snapshots import SnapshotStore
from tests.devices.conftest import Api
from tests.pantau.test_service import running, wait_ready

PASSWORD = "Rahasia@Kamera#77"  # unencoded `@` and `#`, as cameras are set up in the field
URL = f"rtsp://admin:{PASSWORD}@10.20.0.5:554/Streaming/Channels/101"
SHOWN = "rtsp://***@10.20.0.5:554/Streaming/Channels/101"


@pytest.fixture
async def api(settings: Settings, tmp_path: Path) -> AsyncIterator[Api]:
    """Pantau with its snapshots in tmp_path and no probes (this test writes the states)."""
    streams = StreamsSettings(enabled=False, snapshot_dir=tmp_path / "snapshots")
    settings = settings.model_copy(update={"streams": streams})
    async with running(settings) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            await wait_ready(http)
        tokens = {}
        async with await psycopg.AsyncConnection.connect(
            settings.database.url, autocommit=True
        ) as conn:
            for role in auth.ROLES:
                tokens[role] = (await auth.create_token(conn, role, role, "test")).token
        yield Api(url, settings.database.url, tokens)


def decoded(data: bytes) -> np.ndarray:  # type: ignore[type-arg]
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a JPEG that decodes"
    return image


def picture() -> bytes:
    frame = np.zeros((240, 320, 3), np.uint8)
    cv2.putText(frame, "simpang", (20, 120), cv2.FONT_HERSHEY_SIMPLEX, 2, (0, 255, 0), 3)
    ok, encoded = cv2.imencode(".jpg", frame)
    assert ok
    return bytes(encoded.tobytes())


async def _register(api: Api, device_id: str, device_type: str = "camera") -> None:
    async with api.client("technician") as http:
        answer = await http.post(
            "/api/v1/devices",
            json={
                "device_id": device_id,
                "name": f"Simpang {device_id}",
                "device_type": device_type,
                "kecamatan": "tambun-selatan",
            },
        )
    assert answer.status_code == 201, answer.text


async def _health(
    conn: psycopg.AsyncConnection, device_id: str, at: datetime, state: str, **extra: Any
) -> None:
    columns = ["time", "device_id", "state", *extra]
    await conn.execute(
        f"INSERT INTO camera_health ({', '.join(columns)})"  # noqa: S608 - the test's own names
        f" VALUES ({', '.join(['%s'] * len(columns))})",
        (at, device_id, state, *extra.values()),
    )


async def test_cameras_are_set_listed_and_never_show_a_password(api: Api) -> None:
    await _register(api, "cctv-tambun-01")
    await _register(api, "cctv-tambun-02")  # registered, no stream yet
    await _register(api, "wl-setu-01", "water_level")
    bodies: list[str] = []
    async with api.client("technician") as http:
        created = await http.put(
            "/api/v1/cameras/cctv-tambun-01",
            json={"rtsp_url": URL, "probe_interval_seconds": 5, "thresholds": {"black_luma": 12}},
        )
        bodies.append(created.text)
        assert created.status_code == 201, created.text
        camera = created.json()
        assert camera["rtsp_url"] == SHOWN
        assert camera["version"] == 1
        assert camera["thresholds"] == {
            "black_luma": 12.0,
            "covered_ratio": None,
            "frozen_samples": None,
            "bad_samples": None,
        }
        changed = await http.put(
            "/api/v1/cameras/cctv-tambun-01", json={"rtsp_url": URL, "enabled": False}
        )
        bodies.append(changed.text)
        assert changed.status_code == 200, changed.text
        assert changed.json()["version"] == 2
        assert changed.json()["probe_interval_seconds"] == 10  # replaced whole: the default
        assert changed.json()["enabled"] is False

        async def refused(device_id: str, body: dict[str, Any], status: int) -> dict[str, Any]:
            answer = await http.put(f"/api/v1/cameras/{device_id}", json=body)
            bodies.append(answer.text)
            assert answer.status_code == status, (body, answer.text)
            return dict(answer.json())

        for bad_url in (
            f"http://admin:{PASSWORD}@10.20.0.5/",
            f"rtsp://admin:{PASSWORD}@",
            f"rtsp://admin:{PASSWORD} @10.20.0.5/x",
            f"rtsp://admin:{PASSWORD}@10.20.0.5/\x00",
            f"rtsp://admin:{PASSWORD}@10.20.0.5/" + "x" * 2048,
        ):
            error = await refused("cctv-tambun-01", {"rtsp_url": bad_url}, 422)
            assert error["problems"][0]["field"] == "rtsp_url"
            assert "expected an rtsp:// or rtsps:// URL" in error["problems"][0]["message"]
        for body, field in (
            ({"rtsp_url": URL, "probe_interval_seconds": 0}, "probe_interval_seconds"),
            ({"rtsp_url": URL, "probe_interval_seconds": 3601}, "probe_interval_seconds"),
            ({"rtsp_url": URL, "thresholds": {"covered_ratio": 1}}, "thresholds.covered_ratio"),
            ({"rtsp_url": URL, "thresholds": {"frozen_samples": 1}}, "thresholds.frozen_samples"),
            ({"rtsp_url": URL, "thresholds": {"black_luma": 256}}, "thresholds.black_luma"),
            ({"rtsp_url": URL, "colour": "merah"}, "colour"),
            ({}, "rtsp_url"),
        ):
            error = await refused("cctv-tambun-01", body, 422)
            assert error["problems"][0]["field"] == field, error
        for misplaced in (URL, {"rtsp_url": URL, "enabled": URL}):  # echoed, but redacted
            answer = await http.put("/api/v1/cameras/cctv-tambun-01", json=misplaced)
            bodies.append(answer.text)
            assert answer.status_code == 422, answer.text
            assert "rtsp://***@10.20.0.5" in answer.text
        missing = await refused("cctv-nowhere-09", {"rtsp_url": URL}, 404)
        assert missing["detail"] == "no device 'cctv-nowhere-09'"
        other = await refused("wl-setu-01", {"rtsp_url": URL}, 409)
        assert "is a water_level, not a camera" in other["detail"]
    async with api.client("operator") as http:
        answer = await http.put("/api/v1/cameras/cctv-tambun-01", json={"rtsp_url": URL})
        assert answer.status_code == 403
        listed = await http.get("/api/v1/cameras")
        one = await http.get("/api/v1/cameras/cctv-tambun-01")
        not_camera = await http.get("/api/v1/cameras/wl-setu-01")
        bodies += [listed.text, one.text, not_camera.text]
    assert listed.status_code == 200, listed.text
    assert [(c["device_id"], c["configured"], c["rtsp_url"]) for c in listed.json()] == [
        ("cctv-tambun-01", True, SHOWN),
        ("cctv-tambun-02", False, None),
    ]
    assert one.json()["rtsp_url"] == SHOWN
    assert not_camera.status_code == 404
    async with api.client("admin") as http:
        audit = await http.get("/api/v1/audit", params={"entity": "camera"})
        bodies.append(audit.text)
    assert audit.status_code == 200, audit.text
    entries = audit.json()
    assert [e["action"] for e in entries] == ["update", "create"]
    assert entries[0]["after"]["rtsp_url"] == SHOWN
    assert entries[0]["after"]["rtsp_url_changed"] is False
    assert entries[1]["after"]["rtsp_url_changed"] is True
    with psycopg.connect(api.db) as conn:
        stored = conn.execute("SELECT rtsp_url FROM cameras").fetchall()
    assert stored == [(URL,)]  # stored as given, for the probes
    for body in bodies:
        assert PASSWORD not in body, body
        assert "Rahasia" not in body, body


async def test_state_from_the_newest_check_and_the_detector(api: Api) -> None:
    await _register(api, "cctv-tambun-01")
    async with api.client("technician") as http:
        await http.put("/api/v1/cameras/cctv-tambun-01", json={"rtsp_url": URL})
    now = datetime.now(UTC)
    async with await psycopg.AsyncConnection.connect(api.db, autocommit=True) as conn:
        await _health(conn, "cctv-tambun-01", now - timedelta(seconds=20), "ok", fps=25.0)
        await _health(
            conn, "cctv-tambun-01", now - timedelta(seconds=10), "offline", reason="stalled"
        )
        await conn.execute(
            "INSERT INTO outages (kind, device_id, kecamatan, device_type, cause, severity,"
            " started_at) VALUES ('device', 'cctv-tambun-01', 'tambun-selatan', 'camera',"
            " 'offline:stalled', 'warning', %s)",
            (now - timedelta(minutes=7),),
        )
    async with api.client("operator") as http:
        camera = (await http.get("/api/v1/cameras/cctv-tambun-01")).json()
    assert camera["state"] == "offline"
    assert camera["reason"] == "stalled"
    assert camera["fps"] is None  # of the newest check
    assert datetime.fromisoformat(camera["since"]) == (now - timedelta(minutes=7))
    assert datetime.fromisoformat(camera["checked_at"]) == now - timedelta(seconds=10)


async def test_snapshot_latest_placeholder_and_history(api: Api, tmp_path: Path) -> None:
    for device_id in ("cctv-01", "cctv-02", "cctv-03"):
        await _register(api, device_id)
    async with api.client("technician") as http:
        for device_id in ("cctv-01", "cctv-02"):
            answer = await http.put(
                f"/api/v1/cameras/{device_id}", json={"rtsp_url": URL, "probe_interval_seconds": 5}
            )
            assert answer.status_code == 201, answer.text
    store = SnapshotStore(tmp_path / "snapshots", StreamsSettings(snapshot_every_seconds=1))
    shot = picture()
    now = datetime.now(UTC)
    async with await psycopg.AsyncConnection.connect(api.db, autocommit=True) as conn:
        await _health(conn, "cctv-01", now, "ok")
        await store.save(conn, "cctv-01", now - timedelta(seconds=3), shot)
        await _health(conn, "cctv-02", now, "ok")
        await store.save(conn, "cctv-02", now - timedelta(seconds=60), shot)  # > 3 x 5 s

        async with api.client("operator") as http:
            latest = await http.get("/api/v1/cameras/cctv-01/snapshot.jpg")
            assert latest.status_code == 200
            assert latest.headers["content-type"] == "image/jpeg"
            assert latest.content == shot
            assert latest.headers["X-Camera-State"] == "ok"
            assert "X-Placeholder" not in latest.headers
            assert 3 <= int(latest.headers["X-Snapshot-Age"]) <= 3 + 30
            taken = parsedate_to_datetime(latest.headers["Last-Modified"])
            assert abs((taken - (now - timedelta(seconds=3))).total_seconds()) < 1
            assert latest.headers["Cache-Control"] == "no-cache"
            listed = (await http.get("/api/v1/cameras")).json()
            assert 3 <= listed[0]["snapshot_age_seconds"] <= 33

            stale = await http.get("/api/v1/cameras/cctv-02/snapshot.jpg")
            assert stale.headers["X-Placeholder"] == "stale"
            assert stale.headers["X-Camera-State"] == "ok"
            assert decoded(stale.content).shape == (720, 1280, 3)
            assert "X-Snapshot-Age" not in stale.headers

            none = await http.get("/api/v1/cameras/cctv-03/snapshot.jpg")
            assert none.status_code == 200
            assert none.headers["X-Placeholder"] == "none"
            assert none.headers["X-Camera-State"] == "unknown"
            assert decoded(none.content).shape == (720, 1280, 3)

            # The camera goes offline: its picture, fresh as it is, is no longer shown.
            await _health(conn, "cctv-01", now + timedelta(seconds=1), "offline", reason="auth")
            since = now - timedelta(minutes=2)
            await conn.execute(
                "INSERT INTO outages (kind, device_id, kecamatan, device_type, cause, severity,"
                " started_at) VALUES ('device', 'cctv-01', 'tambun-selatan', 'camera',"
                " 'offline:auth', 'warning', %s)",
                (since,),
            )
            down = await http.get("/api/v1/cameras/cctv-01/snapshot.jpg")
            assert down.status_code == 200
            assert down.headers["X-Placeholder"] == "down"
            assert down.headers["X-Camera-State"] == "offline"
            assert datetime.fromisoformat(down.headers["X-Camera-Since"]) == since
            assert down.headers["X-Camera-Since"].endswith("+07:00")
            assert down.content != shot
            assert decoded(down.content).shape == (720, 1280, 3)
            # a frozen picture is down too
            await _health(conn, "cctv-02", now + timedelta(seconds=1), "frozen")
            frozen = await http.get("/api/v1/cameras/cctv-02/snapshot.jpg")
            assert frozen.headers["X-Placeholder"] == "down"
            assert frozen.headers["X-Camera-State"] == "frozen"

            history = await http.get("/api/v1/cameras/cctv-01/snapshots")
            assert history.status_code == 200, history.text
            [entry] = history.json()
            assert entry["taken_at"].endswith("+07:00")
            kept = await http.get(entry["url"])
            assert kept.status_code == 200
            assert kept.content == shot
            gone = await http.get("/api/v1/cameras/cctv-01/snapshots/20261201T070000.000Z.jpg")
            assert gone.status_code == 404
            assert (await http.get("/api/v1/cameras/cctv-01/snapshots?limit=0")).status_code == 422
            assert (await http.get("/api/v1/cameras/cctv-09/snapshot.jpg")).status_code == 404
        async with api.client(None) as anonymous:
            assert (await anonymous.get("/api/v1/cameras/cctv-01/snapshot.jpg")).status_code == 401
