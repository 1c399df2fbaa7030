"""`pantau cameras ...` as a technician runs it: a stream set and listed (never its password),
clear errors, a snapshot written to a file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import psycopg

PASSWORD = "Rahasia@Kamera#77"
URL = f"rtsp://admin:{PASSWORD}@10.20.0.5:554/ch1"
ROOT = Path(__file__).resolve().parents[2]


def pantau(db: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it, from this checkout (the shared virtualenv's editable
    install may point at another)."""
    return subprocess.run(
        [sys.executable, "-m", "pantau", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
        env={
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(ROOT),
            "PANTAU_DATABASE__URL": db,
            "PANTAU_STREAMS__SNAPSHOT_DIR": str(cwd / "snapshots"),
        },
    )


def test_set_list_show_snapshot(migrated_db: str, tmp_path: Path) -> None:
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO devices (device_id, name, device_type, kecamatan) VALUES"
            " ('cctv-01', 'Simpang Tambun', 'camera', 'tambun-selatan'),"
            " ('wl-01', 'Pos Setu', 'water_level', 'setu')"
        )
    outputs: list[str] = []

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = pantau(migrated_db, tmp_path, "cameras", *args)
        outputs.append(done.stdout + done.stderr)
        assert (done.returncode == 0) == ok, (args, done.stdout, done.stderr)
        return done

    first = run("set", "cctv-01", ok=False)
    assert "--url: expected the stream of cctv-01" in first.stderr
    made = run("set", "cctv-01", "--url", URL, "--interval", "5", "--black-luma", "15")
    assert made.stdout.strip() == (
        "cctv-01: rtsp://***@10.20.0.5:554/ch1, every 5 s, enabled (version 1)"
    )
    changed = run("set", "cctv-01", "--disable")  # the rest is kept
    assert "every 5 s, disabled (version 2)" in changed.stdout
    for args, expected in (
        (("set", "cctv-01", "--interval", "0"), "--interval: expected greater than or equal to 1"),
        (("set", "cctv-01", "--url", f"http://admin:{PASSWORD}@x/"), "--url: expected an rtsp://"),
        (("set", "wl-01", "--url", URL), "'wl-01' is a water_level, not a camera"),
    ):
        wrong = run(*args, ok=False)
        assert wrong.returncode == 2
        assert expected in wrong.stderr, (args, wrong.stderr)

    listed = run("list")
    lines = listed.stdout.splitlines()
    assert lines[0].startswith("camera")
    assert lines[1].startswith("cctv-01")
    assert "disabled" in lines[1]
    assert "rtsp://***@10.20.0.5:554/ch1" in lines[1]
    assert lines[-1] == "1 cameras, 0 down"
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO camera_health (time, device_id, state, reason)"
            " VALUES (now(), 'cctv-01', 'offline', 'stalled')"
        )
    shown = run("show", "cctv-01")
    assert "offline:stalled (aliran macet)" in shown.stdout
    assert "black_luma=15.0" in shown.stdout
    assert "covered_ratio=default" in shown.stdout
    out = tmp_path / "now.jpg"
    written = run("snapshot", "cctv-01", "-o", str(out))
    assert written.stdout.strip() == f"wrote {out}: placeholder (camera offline)"
    image = cv2.imdecode(np.frombuffer(out.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    assert image.shape == (720, 1280, 3)

    with psycopg.connect(migrated_db) as conn:
        actors = conn.execute(
            "SELECT action, actor FROM audit_log WHERE entity = 'camera' ORDER BY id"
        ).fetchall()
    assert [a for a, _ in actors] == ["create", "update"]
    assert all(actor.startswith("cli:") for _, actor in actors)
    for output in outputs:
        assert PASSWORD not in output, output
        assert "Rahasia" not in output, output
