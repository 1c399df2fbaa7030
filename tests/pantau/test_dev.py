"""`pantau dev` (what `make run` starts) as a user runs it: ready within 30 s, Ctrl-C leaves no
process behind, the next start reuses the data."""

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import psycopg
import pytest

from ingest.simulator import build_devices, report_interval_seconds
from pantau.dev import build_cameras
from pantau.embedded import free_port
from pantau.settings import EmbeddedSettings


@pytest.fixture
def var_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pantau-dev-"))
    path.chmod(0o755)
    yield path / "var"
    # If a test failed half-way, do not leave its PostgreSQL running.
    pg = path / "var" / "pg"
    if (pg / "postmaster.pid").exists():
        cmd = ["/usr/lib/postgresql/15/bin/pg_ctl", "stop", "-m", "immediate", "-D", str(pg)]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=False, capture_output=True, cwd="/")
    subprocess.run(["rm", "-rf", str(path)], check=False)


def start_dev(var_dir: Path, http_port: int, **env: str) -> subprocess.Popen[str]:
    """`pantau dev` as `make run` starts it; its terminal output goes to a file that the test
    reads while it runs (`output`)."""
    runs = len(list(var_dir.parent.glob("dev-*.out")))
    out_file = var_dir.parent / f"dev-{runs + 1}.out"
    with out_file.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pantau", "dev"],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            cwd=var_dir.parent,
            env={
                "PATH": os.environ["PATH"],
                "PANTAU_EMBEDDED__VAR_DIR": str(var_dir),
                "PANTAU_HTTP__PORT": str(http_port),
                "PANTAU_LOG__FORMAT": "text",
                "PYTHONPATH": str(Path(__file__).parents[2]),  # this checkout's code
                **env,
            },
        )
    _OUTPUT[proc.pid] = out_file
    return proc


_OUTPUT: dict[int, Path] = {}


def output(proc: subprocess.Popen[str]) -> str:
    return _OUTPUT[proc.pid].read_text()


def wait_ready(proc: subprocess.Popen[str], port: int, timeout: float = 30) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"pantau dev exited {proc.returncode}:\n{output(proc)}\n{err}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    _, err = proc.communicate()
    pytest.fail(f"/readyz not ready within {timeout}s:\n{output(proc)}\n{err}")


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def stack_pids(proc: subprocess.Popen[str], var_dir: Path) -> set[int]:
    """pantau dev, its children (Mosquitto), and PostgreSQL with its backends."""
    postmaster = int((var_dir / "pg" / "postmaster.pid").read_text().split()[0])
    return {proc.pid, postmaster} | descendants(proc.pid) | descendants(postmaster)


def dsn(var_dir: Path) -> str:
    import json

    port = json.loads((var_dir / "ports.json").read_text())["postgres"]
    return f"postgresql://pantau@/pantau?host={var_dir / 'run'}&port={port}"


def test_dev_ready_ctrl_c_clean_and_data_reused(var_dir: Path) -> None:
    port = free_port()
    proc = start_dev(var_dir, port)
    wait_ready(proc, port, timeout=30)
    pids = stack_pids(proc, var_dir)
    assert len(pids) >= 4  # pantau, mosquitto, postmaster, PostgreSQL's own workers
    camera_server = [p for p in pids if b"testserver.py" in Path(f"/proc/{p}/cmdline").read_bytes()]
    with psycopg.connect(dsn(var_dir), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO readings VALUES (now(), 'wl-cikarang-01', 'water_level_cm', 87.5)"
        )

    # The simulated sensors are registered devices, in the API as in the CLI.
    simulated = build_devices(EmbeddedSettings().simulate_devices)
    interval = report_interval_seconds(simulated, EmbeddedSettings().simulate_rate)
    token = (var_dir / "secrets" / "api-admin-token").read_text().strip()
    listed = httpx.get(
        f"http://127.0.0.1:{port}/api/v1/devices",
        params={"limit": 5000},
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    by_id = {d["device_id"]: d for d in listed if d["device_type"] != "camera"}
    assert set(by_id) == {d.device_id for d in simulated}
    for sim in simulated:
        device = by_id[sim.device_id]
        assert (device["device_type"], device["kecamatan"], device["payload_format"]) == (
            sim.device_type,
            sim.kecamatan_id,
            sim.fmt,
        )
        assert (device["latitude"], device["longitude"]) == (sim.latitude, sim.longitude)
        assert device["expected_interval_seconds"] == interval
        assert device["metadata"] == {"simulated": True}
    assert f"{len(simulated)} registered devices ({len(simulated)} new, 0 updated, 0 retired)" in (
        output(proc)
    )

    # The banner's CLI line, pasted in a fresh shell (no virtualenv active) in the directory
    # `make run` was started from.
    banner = output(proc)
    line = next(x for x in banner.splitlines() if x.startswith("  CLI "))
    command = line.removeprefix("  CLI ").strip()
    pasted = subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=var_dir.parent,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(var_dir.parent)},
    )
    assert pasted.returncode == 0, f"{command}\n{pasted.stderr}"
    assert all(d.device_id in pasted.stdout for d in simulated), pasted.stdout
    # The line under it: activate the virtualenv, export the config, then plain `pantau`.
    hint = banner.splitlines()[banner.splitlines().index(line) + 1].strip()
    assert hint.startswith("(or: ")
    activated = subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", hint.removeprefix("(or: ").removesuffix(")")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=var_dir.parent,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(var_dir.parent)},
    )
    assert activated.returncode == 0, f"{hint}\n{activated.stderr}"
    assert all(d.device_id in activated.stdout for d in simulated)

    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    out = output(proc)
    assert proc.returncode == 0, err
    assert "Creating the embedded PostgreSQL" in out
    assert f"http://127.0.0.1:{port}/readyz" in out
    assert "Pantau stopped; data kept in" in out
    token = (var_dir / "secrets" / "api-admin-token").read_text().strip()
    assert f"API token    {token}" in out
    wall_token = (var_dir / "secrets" / "api-wall-token").read_text().strip()
    assert f"Wall         http://127.0.0.1:{port}/wall#token={wall_token}" in out
    left = {pid for pid in pids if alive(pid)}
    assert not left, f"processes left behind: {left}"
    assert len(camera_server) == 1, "no test camera server was running"
    assert not (var_dir / "pg" / "postmaster.pid").exists()

    # Fewer sensors at another rate: the same devices, their interval brought in line, those no
    # longer simulated retired, nothing registered twice.
    proc = start_dev(
        var_dir, port, PANTAU_EMBEDDED__SIMULATE_RATE="24", PANTAU_EMBEDDED__SIMULATE_DEVICES="40"
    )
    try:
        wait_ready(proc, port, timeout=30)
        fewer = simulated[:40]
        assert [d.device_id for d in build_devices(40)] == [d.device_id for d in fewer]
        faster = report_interval_seconds(fewer, 24)
        assert faster != interval
        assert (
            f"40 registered devices (0 new, 40 updated, {len(simulated) - 40} retired), "
            f"each reporting every {faster} s" in output(proc)
        )
        token = (var_dir / "secrets" / "api-admin-token").read_text().strip()
        listed = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/devices",
            params={"limit": 5000},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert listed.status_code == 200
        states = {d["device_id"]: d["status"] for d in listed.json()}
        assert {i for i, s in states.items() if s == "active"} >= {d.device_id for d in fewer}
        assert {i for i, s in states.items() if s == "retired"} == {
            d.device_id for d in simulated[40:]
        }
        assert httpx.get(f"http://127.0.0.1:{port}/m/").status_code == 200
        # The wall's link signs in as an operator, and the wall reads the stack's devices.
        wall = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/wall",
            headers={"Authorization": f"Bearer {wall_token}"},
        )
        assert wall.status_code == 200, wall.text
        assert wall.json()["totals"]["total"] >= 40
        # The test cameras: `camera` devices with a stream each, served by the camera server.
        cameras = build_cameras(EmbeddedSettings().simulate_cameras)
        assert {d["device_id"] for d in listed.json() if d["device_type"] == "camera"} == {
            c.device_id for c in cameras
        }
        with psycopg.connect(dsn(var_dir), autocommit=True) as conn:
            urls = dict(conn.execute("SELECT device_id, rtsp_url FROM cameras").fetchall())
        assert set(urls) == {c.device_id for c in cameras}
        with av.open(
            urls[cameras[0].device_id],
            options={"rtsp_transport": "tcp", "probesize": "32768", "analyzeduration": "500000"},
            timeout=(10, 10),
        ) as container:
            assert next(container.demux(container.streams.video[0])).size > 0
        assert f"Cameras      {len(cameras)} test cameras on rtsp://" in output(proc)

        # A second terminal: commands reach this stack through var/dev.toml.
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "pantau",
                "devices",
                "add",
                "--id",
                "wl-dev-01",
                "--name",
                "X",
                "--type",
                "water_level",
                "--kecamatan",
                "setu",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=var_dir.parent,
            env={"PATH": os.environ["PATH"], "PANTAU_CONFIG": str(var_dir / "dev.toml")},
        )
        assert second.returncode == 0, second.stderr
        assert "MQTT password (shown this once)" in second.stdout
        with psycopg.connect(dsn(var_dir), autocommit=True) as conn:
            kept = conn.execute(
                "SELECT value FROM readings WHERE device_id = 'wl-cikarang-01'"
            ).fetchall()
            assert kept == [(87.5,)]
            # `make run` feeds itself: the simulated sensors' readings arrive through MQTT.
            deadline = time.monotonic() + 20
            devices = 0
            while devices <= 5 and time.monotonic() < deadline:
                time.sleep(0.5)
                row = conn.execute(
                    "SELECT count(DISTINCT device_id) FROM readings"
                    " WHERE device_id <> 'wl-cikarang-01'"
                ).fetchone()
                devices = row[0] if row else 0
            assert devices > 5
            created = conn.execute(
                "SELECT count(*) FROM audit_log WHERE action = 'create' AND entity = 'device'"
                " AND actor = 'pantau dev'"
            ).fetchone()
            assert created == (len(simulated) + len(cameras),)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    out = output(proc)
    assert proc.returncode == 0, err
    assert "Reusing the embedded PostgreSQL" in out
    # The camera server got its port back: no camera's stream changed.
    assert f"Test cameras: {len(cameras)} registered devices (0 new, 0 updated, 0 retired)" in out
    assert f"API token    {token}" in out  # the same token, still valid
    assert f"/wall#token={wall_token}  (operator" in out  # and the wall's


def test_dev_recovers_after_kill_9(var_dir: Path) -> None:
    port = free_port()
    proc = start_dev(var_dir, port)
    wait_ready(proc, port)
    commands = {p: Path(f"/proc/{p}/cmdline").read_text() for p in descendants(proc.pid)}
    mosquitto = [p for p, cmd in commands.items() if "mosquitto" in cmd or "testserver.py" in cmd]
    assert len(mosquitto) == 2  # the broker and the test camera server
    proc.kill()
    proc.communicate(timeout=10)
    # Mosquitto and the cameras die with their parent; PostgreSQL (a daemon) is stopped by the
    # next start.
    deadline = time.monotonic() + 10
    while any(alive(p) for p in mosquitto) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in mosquitto)

    proc = start_dev(var_dir, port)
    try:
        wait_ready(proc, port)
        assert "registered devices (0 new, 0 updated, 0 retired)" in output(proc)
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "was still running; restarting it" in err
