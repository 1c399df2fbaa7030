"""The state directory and the MQTT client id: resolved from settings, checked at start, and
`pantau run` as the unprivileged user it runs as in the image and under systemd.

The tests run as root here, so the service runs as `nobody` (through `setpriv`). The worktree's
virtualenv points at an interpreter under /root (mode 0700), which `nobody` cannot execute: the
process runs Debian's /usr/bin/python3.11 (the same 3.11 ABI) with the virtualenv's
site-packages added, i.e. the same code and packages."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pantau import instance
from pantau.embedded import MosquittoBroker, free_port
from pantau.errors import ConfigError
from pantau.settings import Settings, load_settings
from tests.fixtures.pantau_proc import wait_for

NOBODY = "nobody"
SYSTEM_PYTHON = Path("/usr/bin/python3.11")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("PANTAU_") or name == "STATE_DIRECTORY":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no pantau.toml here


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory `nobody` can traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="pantau-state-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_relative_paths_live_in_the_state_dir(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_settings().service.state_dir is None
    assert load_settings().ingest.spool_dir == Path("spool")  # as before: the working directory

    monkeypatch.setenv("PANTAU_SERVICE__STATE_DIR", "/var/lib/pantau")
    s = load_settings()
    assert s.ingest.spool_dir == Path("/var/lib/pantau/spool")
    assert s.streams.snapshot_dir == Path("/var/lib/pantau/snapshots")

    monkeypatch.setenv("PANTAU_INGEST__SPOOL_DIR", "/srv/spool")
    monkeypatch.setenv("PANTAU_STREAMS__SNAPSHOT_DIR", "pictures")
    s = load_settings()
    assert s.ingest.spool_dir == Path("/srv/spool")  # absolute: left alone
    assert s.streams.snapshot_dir == Path("/var/lib/pantau/pictures")


def test_systemd_state_directory_is_the_default(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/pantau:/var/lib/other")
    assert load_settings().service.state_dir == Path("/var/lib/pantau")
    assert load_settings().ingest.spool_dir == Path("/var/lib/pantau/spool")
    monkeypatch.setenv("PANTAU_SERVICE__STATE_DIR", "/srv/pantau")  # the setting wins
    assert load_settings().service.state_dir == Path("/srv/pantau")


def test_a_relative_state_dir_is_refused(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANTAU_SERVICE__STATE_DIR", "state")
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert "service.state_dir = 'state' (in environment PANTAU_SERVICE__STATE_DIR)" in message
    assert "absolute" in message


def test_client_id_default_is_distrusted_in_a_container(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    defaulted = load_settings()
    no_markers: list[Path] = []
    warning = instance.untrusted_client_id(defaulted, "3f2a9c81be07", no_markers)
    assert warning is not None
    assert "'3f2a9c81be07' looks like a container id" in warning
    assert "PANTAU_MQTT__CLIENT_ID" in warning
    assert instance.untrusted_client_id(defaulted, "a" * 64, no_markers)
    assert instance.untrusted_client_id(defaulted, "pantau-bekasi-1", no_markers) is None

    marker = tmp_path / ".dockerenv"
    marker.touch()
    warning = instance.untrusted_client_id(defaulted, "pantau-bekasi-1", [marker])
    assert warning is not None
    assert "runs in a container" in warning

    # Kubernetes: every pod has KUBERNETES_SERVICE_HOST, not always a marker file.
    pod = {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}
    warning = instance.untrusted_client_id(defaulted, "pantau-7d9c8b6f5d-x2k4p", no_markers, pod)
    assert warning is not None
    assert "'pantau-7d9c8b6f5d-x2k4p' looks like a Kubernetes Deployment's pod" in warning
    assert "StatefulSet" in warning
    assert "fieldPath: metadata.name" in warning
    warning = instance.untrusted_client_id(defaulted, "pantau-0", no_markers, pod)
    assert warning is not None
    assert "runs in a Kubernetes pod" in warning
    # The same name outside Kubernetes is a host's own: trusted.
    assert (
        instance.untrusted_client_id(defaulted, "pantau-7d9c8b6f5d-x2k4p", no_markers, {}) is None
    )

    monkeypatch.setenv("PANTAU_MQTT__CLIENT_ID", "pantau-1")  # the operator's choice
    assert instance.untrusted_client_id(load_settings(), "3f2a9c81be07", [marker]) is None
    assert instance.untrusted_client_id(load_settings(), "pantau-0", no_markers, pod) is None
    monkeypatch.delenv("PANTAU_MQTT__CLIENT_ID")
    (tmp_path / "pantau.toml").write_text('[mqtt]\nclient_id = "pantau-2"\n')
    assert instance.untrusted_client_id(load_settings(), "3f2a9c81be07", [marker]) is None


def test_check_writable_names_the_setting_and_creates_nothing(tmp_path: Path) -> None:
    base = tmp_path / "state"
    s = Settings(service={"state_dir": base})
    instance.check_writable(s)  # does not exist yet; its parent is writable
    assert not base.exists()

    blocker = tmp_path / "file"
    blocker.write_text("")
    s = Settings(service={"state_dir": blocker / "state"})
    with pytest.raises(ConfigError, match=r"service\.state_dir: cannot write .*is not a directory"):
        instance.check_writable(s)


def nobody_pantau(*args: str) -> list[str]:
    """`pantau ARGS` as `nobody`, from this checkout's code and its virtualenv's packages."""
    if not SYSTEM_PYTHON.exists():
        pytest.fail("needs /usr/bin/python3.11: apt-get install python3.11")
    site = next(Path(sys.prefix, "lib").glob("python3.*/site-packages"))
    code = (
        "import site, sys; site.addsitedir(sys.argv[1]); sys.argv[:2] = ['pantau']; "
        "from pantau.cli import main; sys.exit(main())"
    )
    # setpriv execs (runuser forks and answers SIGTERM itself): signals reach Pantau.
    drop = ["setpriv", "--reuid", NOBODY, "--regid", "nogroup", "--clear-groups"]
    return [*drop, str(SYSTEM_PYTHON), "-c", code, str(site), *args]


def env_for(**settings: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(Path(__file__).parents[2]),  # this checkout's code
        "PANTAU_LOG__FORMAT": "text",
        **settings,
    }


def ready(proc: subprocess.Popen[bytes], port: int, log: Path) -> bool:
    assert proc.poll() is None, log.read_text()[-3000:]
    return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200


def test_unwritable_state_dir_stops_the_start_naming_dir_user_and_fix(shared_dir: Path) -> None:
    state = shared_dir / "state"
    state.mkdir(mode=0o755)  # root's, as /var/lib/pantau is before anyone gives it away
    done = subprocess.run(
        nobody_pantau("run"),
        env=env_for(
            PANTAU_SERVICE__STATE_DIR=str(state),
            PANTAU_DATABASE__URL="postgresql://pantau@127.0.0.1:1/pantau",
            PANTAU_HTTP__PORT=str(free_port()),
        ),
        cwd=shared_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert f"service.state_dir: cannot write {state} as user nobody (uid 65534)" in done.stderr
    assert f"install -d -o nobody {state}" in done.stderr
    assert "StateDirectory=pantau" in done.stderr
    assert "Traceback" not in done.stderr

    # `pantau config check` says so too, and still prints the settings.
    checked = subprocess.run(
        nobody_pantau("config", "check"),
        env=env_for(PANTAU_SERVICE__STATE_DIR=str(state)),
        cwd=shared_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert "warning: `pantau run` would stop: service.state_dir: cannot write" in checked.stderr
    assert f'state_dir = "{state}"' in checked.stdout

    # A spool elsewhere, in a directory it cannot create, is named by its own setting.
    state.chmod(0o777)
    done = subprocess.run(
        nobody_pantau("run"),
        env=env_for(
            PANTAU_SERVICE__STATE_DIR=str(state),
            PANTAU_INGEST__SPOOL_DIR=str(shared_dir / "spool"),
            PANTAU_DATABASE__URL="postgresql://pantau@127.0.0.1:1/pantau",
            PANTAU_HTTP__PORT=str(free_port()),
        ),
        cwd=shared_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "ingest.spool_dir: cannot write" in done.stderr
    assert f"its parent {shared_dir} is not writable" in done.stderr


def test_runs_as_nobody_with_its_state_in_the_state_dir_and_warns_of_a_container_hostname(
    shared_dir: Path, database_url: str, mosquitto: MosquittoBroker
) -> None:
    state = shared_dir / "state"
    state.mkdir()
    shutil.chown(state, NOBODY)
    state.chmod(0o750)
    hostname = secrets.token_hex(6)  # as Docker names a container's host
    port = free_port()
    log = shared_dir / "pantau.log"
    # A UTS namespace of its own, so the process sees a container-like hostname.
    cmd = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', hostname]
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*cmd, *nobody_pantau("run")],
            env=env_for(
                PANTAU_SERVICE__STATE_DIR=str(state),
                PANTAU_DATABASE__URL=database_url,
                PANTAU_MQTT__HOST="127.0.0.1",
                PANTAU_MQTT__PORT=str(mosquitto.port),
                PANTAU_HTTP__PORT=str(port),
                PANTAU_STREAMS__ENABLED="false",
            ),
            cwd=shared_dir,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for("pantau ready as nobody", lambda: ready(proc, port, log))
        spool = state / "spool"
        assert spool.is_dir(), log.read_text()
        assert spool.owner() == NOBODY
        text = log.read_text()
        assert f"mqtt.client_id defaults to 'pantau-{hostname}'" in text
        assert f"the hostname '{hostname}' looks like a container id" in text
    finally:
        proc.terminate()
        code = proc.wait(30)
    assert code == 0, log.read_text()[-3000:]


def test_an_explicit_client_id_runs_without_the_warning(
    shared_dir: Path, database_url: str, mosquitto: MosquittoBroker
) -> None:
    state = shared_dir / "state"
    state.mkdir()
    shutil.chown(state, NOBODY)
    port = free_port()
    log = shared_dir / "pantau.log"
    cmd = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', secrets.token_hex(6)]
    client_id = f"pantau-{uuid.uuid4().hex[:6]}"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*cmd, *nobody_pantau("run")],
            env=env_for(
                PANTAU_SERVICE__STATE_DIR=str(state),
                PANTAU_DATABASE__URL=database_url,
                PANTAU_MQTT__HOST="127.0.0.1",
                PANTAU_MQTT__PORT=str(mosquitto.port),
                PANTAU_MQTT__CLIENT_ID=client_id,
                PANTAU_HTTP__PORT=str(port),
                PANTAU_STREAMS__ENABLED="false",
            ),
            cwd=shared_dir,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for("pantau ready as nobody", lambda: ready(proc, port, log))
        assert "mqtt.client_id defaults to" not in log.read_text()
    finally:
        proc.terminate()
        code = proc.wait(30)
    assert code == 0, log.read_text()[-3000:]
