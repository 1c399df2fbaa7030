"""End to end: a real `pantau run` probes real test cameras (streams/testserver.py) and the outage
detector raises and resolves camera outages with their causes; no camera credentials appear in
anything the run printed (its stdout and stderr: Pantau's logs and whatever FFmpeg writes)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg

import streams
from devices import registry
from devices.models import DeviceIn
from pantau.embedded import MosquittoBroker
from streams.snapshots import LATEST
from tests.fixtures.pantau_proc import PantauProcess, wait_for
from tests.fixtures.rtsp import CREDENTIALS, RtspServer

WRONG = "pantau:salah-sandi-kamera"


def _register(db: str, cameras: dict[str, str]) -> None:
    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
            for device_id, url in cameras.items():
                data: dict[str, Any] = {
                    "device_id": device_id,
                    "name": device_id,
                    "device_type": "camera",
                    "kecamatan": "setu",
                    "expected_interval_seconds": 10,
                }
                await registry.create_device(conn, DeviceIn.model_validate(data), "test")
                await conn.execute(
                    "INSERT INTO cameras (device_id, rtsp_url, probe_interval_seconds)"
                    " VALUES (%s, %s, 1)",
                    (device_id, url),
                )

    asyncio.run(run())


def _outages(db: str) -> dict[str, tuple[str, bool]]:
    """Device outages by device: (cause, still open); the newest per device."""
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT device_id, cause, ended_at IS NULL FROM outages"
            " WHERE kind = 'device' ORDER BY id"
        ).fetchall()
    return {device: (cause, is_open) for device, cause, is_open in rows}


def _latest_state(db: str, device_id: str) -> str | None:
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT state FROM camera_health WHERE device_id = %s ORDER BY time DESC LIMIT 1",
            (device_id,),
        ).fetchone()
    return row[0] if row else None


def test_camera_outages_raised_and_resolved_with_their_causes(
    migrated_db: str, mosquitto: MosquittoBroker, rtsp_server: RtspServer, tmp_path: Path
) -> None:
    _register(
        migrated_db,
        {
            "cam-moving": rtsp_server.url("moving"),
            "cam-frozen": rtsp_server.url("frozen"),
            "cam-stops": rtsp_server.url("stops"),
            "cam-secure": rtsp_server.url("secure", CREDENTIALS),
            "cam-wrong": rtsp_server.url("secure", WRONG),
        },
    )
    env = {
        # The tree these tests run from (a worktree's, not the editable install's).
        "PYTHONPATH": str(Path(streams.__file__).resolve().parent.parent),
        "PANTAU_DATABASE__URL": migrated_db,
        "PANTAU_MQTT__HOST": "127.0.0.1",
        "PANTAU_MQTT__PORT": str(mosquitto.port),
        "PANTAU_MQTT__CLIENT_ID": f"pantau-cams-{uuid.uuid4().hex[:6]}",
        "PANTAU_INGEST__SPOOL_DIR": str(tmp_path / "spool"),
        "PANTAU_LOG__LEVEL": "DEBUG",  # everything a probe says, to search for credentials
        "PANTAU_STREAMS__SNAPSHOT_DIR": str(tmp_path / "snapshots"),
        "PANTAU_STREAMS__STAGGER_SECONDS": "0.5",
        "PANTAU_STREAMS__STALL_TIMEOUT_SECONDS": "2",
        "PANTAU_STREAMS__OPEN_TIMEOUT_SECONDS": "3",
        "PANTAU_STREAMS__RECONNECT_MIN_SECONDS": "0.3",
        "PANTAU_STREAMS__RECONNECT_MAX_SECONDS": "1",
        "PANTAU_STREAMS__FROZEN_SAMPLES": "2",
        "PANTAU_OUTAGES__DETECTOR_INTERVAL_SECONDS": "1",
        "PANTAU_OUTAGES__RECOVERY_FACTOR": "0",
        "PANTAU_OUTAGES__RECOVERY_MIN_SECONDS": "1",
    }
    pantau = PantauProcess(env, tmp_path)
    pantau.start()
    try:
        pantau.wait_ready()

        def first_verdicts() -> object:
            outages = _outages(migrated_db)
            states = {d: _latest_state(migrated_db, d) for d in ("cam-stops", "cam-secure")}
            return (
                outages.get("cam-frozen") == ("frozen", True)
                and outages.get("cam-wrong") == ("offline:auth", True)
                and states == {"cam-stops": "ok", "cam-secure": "ok"}
            ) or (outages, states)

        wait_for("frozen and auth outages, /stops and /secure ok", first_verdicts, timeout=30)
        rtsp_server.command("stop", "stops")
        wait_for(
            "/stops offline",
            lambda: (
                _outages(migrated_db).get("cam-stops", ("", False))[0]
                in {"offline:ended", "offline:not_found"}
            ),
            timeout=20,
        )
        rtsp_server.command("start", "stops")
        wait_for(
            "/stops back, its outage resolved",
            lambda: _outages(migrated_db)["cam-stops"][1] is False,
            timeout=20,
        )
        latest = tmp_path / "snapshots" / "cam-moving" / LATEST
        assert latest.read_bytes()[:2] == b"\xff\xd8"  # saved by the worker, a JPEG
        outages = _outages(migrated_db)
        assert "cam-moving" not in outages
        assert "cam-secure" not in outages
        metrics = httpx.get(f"http://127.0.0.1:{pantau.port}/metrics", timeout=5).text
        assert "pantau_camera_probes 5.0" in metrics
        assert "rahasia" not in metrics
        assert "salah-sandi" not in metrics
    finally:
        with contextlib.suppress(RuntimeError):  # module scope: leave the server as found
            rtsp_server.command("start", "stops")
        code = pantau.stop()
    output = pantau.log.read_text(errors="replace")
    assert code == 0, output[-3000:]
    for secret in ("rahasia-kamera", "salah-sandi"):
        assert secret not in output, f"{secret!r} in the run's output"
    assert "camera cam-secure: probing rtsp://***@127.0.0.1:" in output  # shown, redacted
