"""`pantau outages` and `pantau maintenance ...` as an operator or a technician runs them."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from devices.outages.cli import duration
from pantau.cliapp import WIB
from tests.fixtures.servers import run_pantau


def pantau(db: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_pantau(*args, db=db, cwd=cwd)


def _add(db: str, cwd: Path, device_id: str, kecamatan: str) -> None:
    added = pantau(
        db,
        cwd,
        "devices",
        "add",
        "--id",
        device_id,
        "--name",
        device_id,
        "--type",
        "water_level",
        "--kecamatan",
        kecamatan,
    )
    assert added.returncode == 0, added.stderr


def test_durations_read_as_operators_say_them() -> None:
    assert duration(2 * 3600 + 15 * 60 + 7) == "2 j 15 m"
    assert duration(3 * 86400 + 4 * 3600) == "3 h 4 j"
    assert duration(59) == "59 d"
    assert duration(600) == "10 m"


def test_outages_table_current_first_in_wib(migrated_db: str, tmp_path: Path) -> None:
    _add(migrated_db, tmp_path, "wl-setu-01", "setu")
    _add(migrated_db, tmp_path, "wl-setu-02", "setu")
    now = datetime.now(UTC)
    started = now - timedelta(hours=2, minutes=15, seconds=30)
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        area = conn.execute(
            "INSERT INTO outages (kind, kecamatan, cause, severity, started_at, detail)"
            " VALUES ('area', 'setu', 'area', 'critical', %s, %s) RETURNING id",
            (started, Jsonb({"down": 2, "total": 2, "share": 1.0})),
        ).fetchone()
        assert area is not None
        for device_id, parent in (("wl-setu-01", area[0]), ("wl-setu-02", area[0])):
            conn.execute(
                "INSERT INTO outages (kind, device_id, kecamatan, device_type, cause, severity,"
                " started_at, parent_id) VALUES ('device', %s, 'setu', 'water_level', 'silent',"
                " 'warning', %s, %s)",
                (device_id, started, parent),
            )
        conn.execute(
            "INSERT INTO outages (kind, device_id, kecamatan, device_type, cause, severity,"
            " started_at, ended_at) VALUES ('device', 'wl-setu-01', 'setu', 'water_level',"
            " 'offline', 'warning', %s, %s)",
            (now - timedelta(days=3), now - timedelta(days=3) + timedelta(minutes=40)),
        )
    listed = pantau(migrated_db, tmp_path, "outages")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert "started (WIB)" in lines[0]
    rows = lines[1:-1]
    assert len(rows) == 4
    assert all("masih" in row for row in rows[:3])
    assert "masih" not in rows[3]
    assert "area: 2 perangkat, 100% mati" in listed.stdout
    assert f"{started.astimezone(WIB):%Y-%m-%d %H:%M}" in rows[0]
    assert "2 j 15 m" in rows[0]
    assert "40 m" in rows[3]
    assert "offline" in rows[3]
    assert lines[-1] == "4 outages, 3 current"

    current = pantau(migrated_db, tmp_path, "outages", "--current", "--kind", "area")
    assert current.returncode == 0, current.stderr
    assert current.stdout.splitlines()[-1] == "1 outages, 1 current"
    past = pantau(
        migrated_db,
        tmp_path,
        "outages",
        "--kecamatan",
        "Setu",
        "--from",
        f"{now.astimezone(WIB) - timedelta(days=4):%Y-%m-%dT%H:%M}",  # WIB, no offset
        "--to",
        f"{now.astimezone(WIB) - timedelta(days=2):%Y-%m-%dT%H:%M}",
    )
    assert past.returncode == 0, past.stderr
    assert past.stdout.splitlines()[-1] == "1 outages, 0 current"
    nothing = pantau(migrated_db, tmp_path, "outages", "--kecamatan", "babelan")
    assert nothing.returncode == 0
    assert "no outages" in nothing.stdout

    for args, expected in (
        (("--kind", "storm"), "--kind: 'storm' is not a kind; expected one of device, area"),
        (("--kecamatan", "Bogor"), "--kecamatan: 'Bogor' is not a kecamatan"),
        (("--from", "kemarin"), "--from: 'kemarin': expected an ISO 8601 time"),
        (("--from", "2026-12-02", "--to", "2026-12-01"), "--to: expected a time after `from`"),
    ):
        wrong = pantau(migrated_db, tmp_path, "outages", *args)
        assert wrong.returncode == 2, (args, wrong.stdout)
        assert expected in wrong.stderr, (args, wrong.stderr)


def test_maintenance_add_list_end(migrated_db: str, tmp_path: Path) -> None:
    _add(migrated_db, tmp_path, "wl-setu-01", "setu")
    now = datetime.now(WIB)
    until = f"{now + timedelta(hours=3):%Y-%m-%dT%H:%M}"
    added = pantau(
        migrated_db, tmp_path, "maintenance", "add", "wl-setu-01", "--to", until,
        "--reason", "ganti baterai",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("planned maintenance window ")
    window_id = added.stdout.split()[3]
    assert "berlaku" in added.stdout
    assert until.replace("T", " ") in added.stdout
    area = pantau(
        migrated_db, tmp_path, "maintenance", "add", "--kecamatan", "Cikarang Pusat",
        "--from", f"{now + timedelta(days=1):%Y-%m-%d}", "--to",
        f"{now + timedelta(days=2):%Y-%m-%d}", "--reason", "pemadaman PLN",
    )  # fmt: skip
    assert area.returncode == 0, area.stderr
    assert "kecamatan cikarang-pusat" in area.stdout

    listed = pantau(migrated_db, tmp_path, "maintenance", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[-1] == "2 windows, 1 in force now"
    current = pantau(migrated_db, tmp_path, "maintenance", "list", "--current")
    assert "wl-setu-01" in current.stdout
    assert "cikarang" not in current.stdout

    ended = pantau(migrated_db, tmp_path, "maintenance", "end", window_id)
    assert ended.returncode == 0, ended.stderr
    assert ended.stdout.startswith(f"ended maintenance window {window_id} at ")
    again = pantau(migrated_db, tmp_path, "maintenance", "end", window_id)
    assert again.returncode == 2
    assert "ended already" in again.stderr
    with psycopg.connect(migrated_db) as conn:
        actions = conn.execute(
            "SELECT action, actor FROM audit_log WHERE entity = 'maintenance' AND entity_id = %s"
            " ORDER BY id",
            (window_id,),
        ).fetchall()
    assert [a for a, _ in actions] == ["create", "end"]
    assert all(actor.startswith("cli:") for _, actor in actions)

    for args, expected in (
        (("add", "--to", until, "--reason", "x"), "expected a DEVICE or --kecamatan K"),
        (("add", "wl-setu-01", "--reason", "x"), "--to: expected when the window ends"),
        (("add", "wl-setu-01", "--to", until), "--reason: expected what is done"),
        (
            ("add", "wl-setu-01", "--from", until, "--to", until, "--reason", "x"),
            "--to must be after --from",
        ),
        (("add", "wl-nowhere-09", "--to", until, "--reason", "x"), "no device 'wl-nowhere-09'"),
        (("end", "abc"), "ID: 'abc' is not a window id; expected a number"),
        (("end", "999999"), "no maintenance window 999999"),
    ):
        wrong = pantau(migrated_db, tmp_path, "maintenance", *args)
        assert wrong.returncode == 2, (args, wrong.stdout, wrong.stderr)
        assert expected in wrong.stderr, (args, wrong.stderr)
