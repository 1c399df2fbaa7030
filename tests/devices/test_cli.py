"""`pantau devices ...` and `pantau token ...` as a technician or an admin runs them."""

import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import psycopg

from pantau.embedded import MosquittoBroker
from tests.fixtures.servers import DYNSEC_ADMIN, run_pantau


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
    assert "--id 'bad id': String should match pattern" in bad_id.stderr
    assert (
        pantau(migrated_db, tmp_path, "devices", "edit", "nope", "--name", "x").stderr.strip()
        == "error: no device 'nope'"
    )
    assert "nothing to change" in pantau(migrated_db, tmp_path, "devices", "edit", "nope").stderr
    assert (
        "expected csv, xlsx or geojson"
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
        "0 created, 0 updated, 2 unchanged"
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

    # Wait for what the command prints, never for a time: first that it watches, then the line.
    env = {"PATH": os.environ["PATH"], "PANTAU_DATABASE__URL": migrated_db}
    watch = [sys.executable, "-m", "pantau", "devices", "watch", "wl-1", "--seconds", "60"]
    with subprocess.Popen(
        watch, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path, env=env
    ) as proc:
        _watch(proc, migrated_db)


def _watch(proc: subprocess.Popen[str], migrated_db: str) -> None:
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or ()])
    reader.start()

    def wait_for(text: str) -> list[str]:
        seen: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                seen.append(lines.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
            if text in seen[-1]:
                return seen
        raise AssertionError(f"no {text!r} in the output of devices watch: {seen}")

    try:
        wait_for("watching wl-1")
        with psycopg.connect(migrated_db, autocommit=True) as conn:
            conn.execute(
                "SELECT pantau_ensure_partitions('readings', current_date - 1, current_date + 1)"
            )
            conn.execute("INSERT INTO readings VALUES (now(), 'wl-1', 'water_level_cm', 131.5)")
        shown = wait_for("water_level_cm = 131.5")
        assert shown[-1].rstrip().endswith("WIB  water_level_cm = 131.5")
        proc.send_signal(signal.SIGINT)  # Ctrl-C ends it quietly
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)


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


ADD_WL = (
    "devices",
    "add",
    "--id",
    "wl-setu-01",
    "--name",
    "Pintu air CBL",
    "--type",
    "water_level",
    "--kecamatan",
    "setu",
)


def test_filters_take_what_add_takes_and_name_the_option(migrated_db: str, tmp_path: Path) -> None:
    assert pantau(migrated_db, tmp_path, *ADD_WL).returncode == 0
    by_name = pantau(migrated_db, tmp_path, "devices", "list", "--kecamatan", "Setu")
    assert by_name.returncode == 0, by_name.stderr
    assert by_name.stdout.rstrip().endswith("1 devices")
    for option, value, message in (
        ("--kecamatan", "Jakarta", "'Jakarta' is not a kecamatan of the regency; expected an id"),
        ("--type", "toaster", "'toaster' is not a device type; expected one of air_quality, "),
        ("--status", "broken", "'broken' is not a status; expected one of active, maintenance"),
        ("--pillar", "sport", "'sport' is not a pillar; expected one of branding, "),
    ):
        wrong = pantau(migrated_db, tmp_path, "devices", "list", option, value)
        assert wrong.returncode == 2, (option, wrong.stdout)
        assert wrong.stderr.startswith(f"error: {option}: {message}"), wrong.stderr
        assert wrong.stdout == ""  # never a silent "0 devices"
    unknown_type = pantau(migrated_db, tmp_path, "devices", "edit", "wl-setu-01", "--type", "x")
    assert unknown_type.stderr.startswith("error: --type: 'x' is not a device type"), (
        unknown_type.stderr
    )


def test_swapped_latitude_and_longitude_get_a_hint(migrated_db: str, tmp_path: Path) -> None:
    swapped = pantau(migrated_db, tmp_path, *ADD_WL, "--lat", "107.03", "--lon", "-6.35")
    assert swapped.returncode == 2
    assert swapped.stderr.strip() == (
        "error: --lat 107.03 --lon -6.35 lies outside Kabupaten Bekasi, but swapped it lies "
        "inside: latitude and longitude swapped? expected --lat -6.35 --lon 107.03"
    )
    assert (
        pantau(migrated_db, tmp_path, *ADD_WL, "--lat", "-6.35", "--lon", "107.03").returncode == 0
    )
    moved = pantau(
        migrated_db, tmp_path, "devices", "edit", "wl-setu-01", "--lat", "107.1", "--lon", "-6.3"
    )
    assert moved.returncode == 2
    assert "expected --lat -6.3 --lon 107.1" in moved.stderr
    far = pantau(
        migrated_db, tmp_path, "devices", "edit", "wl-setu-01", "--lat", "-6.9", "--lon", "107.6"
    )
    assert far.stderr.startswith("error: --lat: (-6.9, 107.6) is outside Kabupaten Bekasi")
    assert "give --allow-outside for an edge case" in far.stderr


def test_pending_devices_with_the_line_that_adopts_them(migrated_db: str, tmp_path: Path) -> None:
    assert pantau(migrated_db, tmp_path, "devices", "pending").stdout.strip() == (
        "no unregistered device has reported"
    )
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute(
            "SELECT pantau_ensure_partitions('readings', current_date - 1, current_date + 1)"
        )
        conn.execute(
            "INSERT INTO readings VALUES (now(), 'wl-cikarang-pusat-03', 'water_level_cm', 88),"
            " (now(), 'odd-thing-9', 'hum', 1)"
        )
        conn.execute(
            "INSERT INTO device_last_seen (device_id, last_reading_at, last_received_at)"
            " VALUES ('wl-cikarang-pusat-03', now(), now()), ('odd-thing-9', now(), now())"
        )
    listed = pantau(migrated_db, tmp_path, "devices", "pending")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["device", "first", "seen", "(WIB)", "last", "(WIB)", "metrics"]
    adopt = [line.split("adopt: ", 1)[1] for line in lines if "adopt: " in line]
    assert sorted(adopt) == [
        "pantau devices add --id odd-thing-9 --name odd-thing-9 --type TYPE --kecamatan KECAMATAN",
        "pantau devices add --id wl-cikarang-pusat-03 --name wl-cikarang-pusat-03"
        " --type water_level --kecamatan cikarang-pusat",
    ]
    assert "2 unregistered devices" in lines[-1]
    # The line works as printed.
    line = next(a for a in adopt if "wl-cikarang" in a)
    adopted = pantau(migrated_db, tmp_path, *shlex.split(line)[1:])
    assert adopted.returncode == 0, adopted.stderr
    again = pantau(migrated_db, tmp_path, "devices", "pending").stdout
    assert "wl-cikarang-pusat-03" not in again
    assert "odd-thing-9" in again


def test_states_credentials_and_no_log_lines_in_the_output(
    migrated_db: str, tmp_path: Path, dynsec_broker: MosquittoBroker
) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ["PATH"],
            "PANTAU_DATABASE__URL": migrated_db,
            "PANTAU_LOG__LEVEL": "DEBUG",  # even so, commands log only warnings
            "PANTAU_MQTT__HOST": "127.0.0.1",
            "PANTAU_MQTT__PORT": str(dynsec_broker.port),
            "PANTAU_MQTT__USERNAME": DYNSEC_ADMIN[0],
            "PANTAU_MQTT__PASSWORD": DYNSEC_ADMIN[1],
            "PANTAU_MQTT__DYNSEC": "true",
        }
        return subprocess.run(
            [sys.executable, "-m", "pantau", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
            check=False,
            env=env,
        )

    added = run(*ADD_WL)
    assert added.returncode == 0, added.stderr
    assert added.stderr == ""
    edited = run("devices", "edit", "wl-setu-01", "--status", "maintenance")
    assert edited.returncode == 0, edited.stderr
    assert edited.stderr == ""  # no "MQTT client of wl-setu-01 disabled" record
    renewed = run("devices", "credentials", "wl-setu-01")
    assert renewed.returncode == 0, renewed.stderr
    assert "MQTT password (shown this once): " in renewed.stdout
    assert renewed.stderr.strip() == (
        "warning: device 'wl-setu-01' is in maintenance: these credentials work once it is "
        "active again (pantau devices edit wl-setu-01 --status active)"
    )
    retired = run("devices", "retire", "wl-setu-01")
    assert retired.stdout.strip() == "wl-setu-01 retired; its MQTT credentials no longer work"
    assert retired.stderr == ""
    again = run("devices", "retire", "wl-setu-01")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("device 'wl-setu-01' is already retired (since ")
    assert again.stdout.rstrip().endswith("WIB): nothing was changed")
    refused = run("devices", "credentials", "wl-setu-01")
    assert refused.returncode == 2
    assert "is retired: make it active first" in refused.stderr
