"""The image and the systemd unit keep Pantau's state where it survives them, checked statically:
no Docker engine runs here, and systemd is not PID 1 (so the unit is verified and scored by
`systemd-analyze`, not started). `pantau run` itself as the unprivileged user: test_instance.py."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).parents[2] / "deploy"
STATE = "/var/lib/pantau"


def dockerfile() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_image_is_multi_stage_non_root_with_its_state_in_a_volume_it_owns() -> None:
    lines = dockerfile()
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) == 2, stages
    assert all("-slim" in stage for stage in stages)
    runtime = lines[lines.index(stages[1]) :]

    (user,) = [line.split()[1] for line in runtime if line.startswith("USER ")]
    uid = user.split(":")[0]
    assert uid.isdigit(), "a numeric user, so runAsNonRoot and a bind mount's chown can see it"
    assert int(uid) != 0
    (useradd,) = [line for line in runtime if "useradd" in line]
    assert f"--uid {uid}" in useradd

    made = next(i for i, line in enumerate(runtime) if "install -d -o pantau -g pantau" in line)
    assert STATE in runtime[made]
    volume = next(i for i, line in enumerate(runtime) if line.startswith("VOLUME "))
    assert STATE in runtime[volume]
    assert made < volume, "created and owned before VOLUME, so a new volume starts out owned"
    assert any(
        line.startswith("ENV ") and f"PANTAU_SERVICE__STATE_DIR={STATE}" in line for line in runtime
    )
    (health,) = [line for line in runtime if line.startswith("HEALTHCHECK ")]
    assert "/readyz" in health
    assert "COPY --from=build" in "\n".join(runtime)
    assert not any("pip install" in line for line in runtime), "installed in the build stage"


def unit() -> str:
    return (DEPLOY / "systemd" / "pantau.service").read_text()


def test_unit_keeps_its_state_in_the_state_directory_and_restarts_on_failure() -> None:
    settings = dict(
        line.split("=", 1) for line in unit().splitlines() if "=" in line and line[0] != "#"
    )
    assert settings["StateDirectory"] == "pantau"  # $STATE_DIRECTORY: service.state_dir
    assert settings["ProtectSystem"] == "strict"
    assert settings["Restart"] == "on-failure"
    assert settings["User"] == "pantau"
    assert not [v for v in settings.values() if "/tmp" in v], "PrivateTmp empties /tmp at stop"


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if not found:
        pytest.fail("needs systemd-analyze: apt-get install systemd")
    return found


def test_unit_verifies_and_is_hardened(tmp_path: Path) -> None:
    # /opt/pantau is not installed here: verify the unit with ExecStart on a program that is.
    copy = tmp_path / "pantau.service"
    copy.write_text(re.sub(r"(?m)^ExecStart=.*$", "ExecStart=/usr/bin/true", unit()))
    verify = subprocess.run(
        [systemd_analyze(), "verify", str(copy)], capture_output=True, text=True, check=False
    )
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr == "", verify.stderr

    security = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert security.returncode == 0, security.stderr
    match = re.search(r"Overall exposure level for pantau.service: ([\d.]+)", security.stdout)
    assert match, security.stdout
    assert float(match[1]) <= 2.0, security.stdout  # "OK" is below 3; it scores 1.3 today
