"""`pantau devices ...` and `pantau token ...` as a technician or an admin runs them."""

import os
import subprocess
import threading
import time
from pathlib import Path

import orjson
import psycopg

from tests.fixtures.servers import run_pantau


def pantau(db: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_pantau(*args, db=db, cwd=cwd)


def test_register_list_show_edit_retire(migrated_db: str, tmp_path: Path) -> None:
    add = pantau(
        migrated_db,
        tmp_path,
        "devices",
        "add",
        "--id",
        "wl-setu-01",
        "--name",
        "Pintu air CBL",
        "--type",
        "water_level",
        "--kecamatan",
        "Setu",
        "--lat",
        "-6.35",
        "--lon",
        "107.03",
    )
    assert add.returncode == 0, add.stderr
    assert "registered wl-setu-01; it publishes on bekasi-json/setu/wl-setu-01" in add.stdout
    listed = pantau(migrated_db, tmp_path, "devices", "list", "--kecamatan", "setu")
    assert "wl-setu-01" in listed.stdout
    assert listed.stdout.rstrip().endswith("1 devices")
    edited = pantau(
        migrated_db, tmp_path, "devices", "edit", "wl-setu-01", "--status", "maintenance"
    )
    assert edited.returncode == 0, edited.stderr
    assert "is now at version 2" in edited.stdout
    shown = pantau(migrated_db, tmp_path, "devices", "show", "wl-setu-01")
    assert "status: maintenance" in shown.stdout
    assert pantau(migrated_db, tmp_path, "devices", "retire", "wl-setu-01").returncode == 0
    assert (
        "wl-setu-01"
        in pantau(migrated_db, tmp_path, "devices", "list", "--status", "retired").stdout
    )
    with psycopg.connect(migrated_db) as conn:
        actors = conn.execute(
            "SELECT DISTINCT actor FROM audit_log WHERE entity = 'device'"
        ).fetchall()
    assert actors == [(f"cli:{os.environ.get('USER') or __import__('getpass').getuser()}",)]


def test_bad_arguments_say_what_was_expected(migrated_db: str, tmp_path: Path) -> None:
    outside = pantau(
        migrated_db,
        tmp_path,
        "devices",
        "add",
        "--id",
        "x1",
        "--name",
        "X",
        "--type",
        "water_level",
        "--kecamatan",
        "setu",
        "--lat",
        "-6.9",
        "--lon",
        "107.6",
    )
    assert outside.returncode == 2
    assert "outside Kabupaten Bekasi" in outside.stderr
    assert "Traceback" not in outside.stderr
    bad_id = pantau(
        migrated_db,
        tmp_path,
        "devices",
        "add",
        "--id",
        "bad id",
        "--name",
        "X",
        "--type",
        "water_level",
        "--kecamatan",
        "setu",
    )
    assert bad_id.returncode == 2
    assert "--device-id: String should match pattern" in bad_id.stderr
    assert (
        pantau(migrated_db, tmp_path, "devices", "edit", "nope", "--name", "x").stderr.strip()
        == "error: no device 'nope'"
    )
    assert "nothing to change" in pantau(migrated_db, tmp_path, "devices", "edit", "nope").stderr
    assert (
        "expected csv or geojson"
        in pantau(migrated_db, tmp_path, "devices", "export", "--format", "xml").stderr
    )


def test_import_export_round_trip(migrated_db: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "device_id,name,device_type,kecamatan\nwl-1,A,water_level,setu\nwl-2,B,lava_lamp,setu\n"
    )
    result = pantau(migrated_db, tmp_path, "devices", "import", str(bad))
    assert result.returncode == 2
    assert "row 2: device_type: 'lava_lamp' is not a device type" in result.stderr
    assert pantau(migrated_db, tmp_path, "devices", "list").stdout.rstrip().endswith("0 devices")
    good = tmp_path / "good.csv"
    good.write_text(
        "device_id,name,device_type,kecamatan,latitude,longitude\n"
        "wl-1,A,water_level,setu,-6.35,107.03\nsl-1,B,street_light,babelan,,\n"
    )
    assert (
        "2 created, 0 updated"
        in pantau(migrated_db, tmp_path, "devices", "import", str(good)).stdout
    )
    out = tmp_path / "all.geojson"
    assert (
        pantau(
            migrated_db, tmp_path, "devices", "export", "--format", "geojson", "-o", str(out)
        ).returncode
        == 0
    )
    doc = orjson.loads(out.read_bytes())
    assert {f["properties"]["device_id"]: f["geometry"] for f in doc["features"]} == {
        "sl-1": None,
        "wl-1": {"type": "Point", "coordinates": [107.03, -6.35]},
    }
    assert (
        "0 created, 2 updated"
        in pantau(migrated_db, tmp_path, "devices", "import", str(out)).stdout
    )
    assert pantau(migrated_db, tmp_path, "devices", "export").stdout.startswith(
        "device_id,name,device_type"
    )


def test_watch_prints_readings_as_they_arrive(migrated_db: str, tmp_path: Path) -> None:
    pantau(
        migrated_db,
        tmp_path,
        "devices",
        "add",
        "--id",
        "wl-1",
        "--name",
        "A",
        "--type",
        "water_level",
        "--kecamatan",
        "setu",
    )

    def later() -> None:
        time.sleep(2.0)
        with psycopg.connect(migrated_db, autocommit=True) as conn:
            conn.execute(
                "SELECT pantau_ensure_partitions('readings', current_date - 1, current_date + 1)"
            )
            conn.execute("INSERT INTO readings VALUES (now(), 'wl-1', 'water_level_cm', 131.5)")

    writer = threading.Thread(target=later)
    writer.start()
    watched = pantau(migrated_db, tmp_path, "devices", "watch", "wl-1", "--seconds", "5")
    writer.join()
    assert watched.returncode == 0, watched.stderr
    assert "watching wl-1" in watched.stdout
    assert "water_level_cm = 131.5" in watched.stdout


def test_types_listed(migrated_db: str, tmp_path: Path) -> None:
    out = pantau(migrated_db, tmp_path, "devices", "types").stdout
    assert "air_quality" in out
    assert "pm25_ugm3" in out
    assert "alarm above 150.5" in out


def test_tokens(migrated_db: str, tmp_path: Path) -> None:
    created = pantau(
        migrated_db,
        tmp_path,
        "token",
        "create",
        "--role",
        "technician",
        "--name",
        "Budi, teknisi Setu",
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.splitlines()[1]
    assert token.startswith("pt_")
    listed = pantau(migrated_db, tmp_path, "token", "list").stdout
    assert "technician" in listed
    assert "Budi, teknisi Setu" in listed
    assert token not in listed
    assert pantau(migrated_db, tmp_path, "token", "revoke", "1").stdout.strip() == "token 1 revoked"
    assert pantau(migrated_db, tmp_path, "token", "revoke", "1").returncode == 2
    wrong = pantau(migrated_db, tmp_path, "token", "create", "--role", "root", "--name", "x")
    assert wrong.returncode == 2
    assert "role 'root': expected one of operator, technician, admin" in wrong.stderr
