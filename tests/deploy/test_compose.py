"""deploy/compose.yaml as `docker-compose config` (Debian `docker-compose`) resolves it, on a copy
of deploy/ with throwaway secrets. No Docker engine runs here: nothing is built or started; the
configs the stack mounts are each checked by their own tool in the other tests of tests/deploy
and by tests/devices/test_delivery.py (amtool)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SECRETS = (
    "db_password",
    "pantau.toml",
    "mqtt_password",
    "mqtt/ca.crt",
    "mqtt/server.crt",
    "mqtt/server.key",
    "grafana_admin_password",
    "grafana.env",
)
ENV = {"PANTAU_PUBLIC_HOST": "pantau.example.go.id", "CADDY_TLS": "it@example.go.id"}


def _compose(deploy: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.fail("docker-compose is missing: install the Debian package `docker-compose`")
    return subprocess.run(
        [tool, "-f", str(deploy / "compose.yaml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **env},
    )


@pytest.fixture(scope="module")
def deploy_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("repo") / "deploy"
    shutil.copytree(DEPLOY, copy)
    for name in SECRETS:
        (copy / "secrets" / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / "secrets" / name).write_text("throwaway\n")
    return copy


@pytest.fixture(scope="module")
def stack(deploy_copy: Path) -> dict[str, Any]:
    done = _compose(deploy_copy, ENV)
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def test_config_needs_the_public_host_and_the_tls_choice(deploy_copy: Path) -> None:
    for missing in ENV:
        done = _compose(deploy_copy, {k: v for k, v in ENV.items() if k != missing})
        assert done.returncode != 0
        assert f"set {missing}" in done.stderr, done.stderr


def test_no_secret_in_the_repository() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    # Passwords only as *_FILE (a path), never a value.
    keys = re.findall(r"^\s+(\w*(?:PASSWORD|TOKEN|SECRET)\w*):", text, flags=re.MULTILINE)
    assert keys
    assert all(key.endswith("_FILE") for key in keys), keys
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "/deploy/secrets/" in ignored
    assert "/deploy/grafana-export/" in ignored


def test_images_are_pinned(stack: dict[str, Any]) -> None:
    images = {name: s["image"] for name, s in stack["services"].items() if "image" in s}
    # TimescaleDB 2.29 supports PostgreSQL 16-19; the stack runs 17 (docs/deploy.md).
    assert images["timescaledb"] == "timescale/timescaledb:2.29.0-pg17"
    assert images["mosquitto"].startswith("eclipse-mosquitto:2.")
    for name, image in images.items():
        tag = image.rsplit(":", 1)[-1]
        assert tag[0].isdigit() or tag[0] == "v", f"{name}: {image} is not pinned to a version"


def test_only_the_proxy_and_mqtt_over_tls_are_published(stack: dict[str, Any]) -> None:
    published = set()
    for name, service in stack["services"].items():
        for p in service.get("ports", []):
            if isinstance(p, str):  # "127.0.0.1:9090:9090/tcp"
                ip, port, _ = p.split(":")
                published.add((name, ip, int(port)))
            else:
                published.add((name, str(p.get("host_ip", "0.0.0.0")), int(p["published"])))
    public = {(name, port) for name, ip, port in published if ip != "127.0.0.1"}
    assert public == {("caddy", 80), ("caddy", 443), ("mosquitto", 8883)}


def test_pantau_service(stack: dict[str, Any]) -> None:
    pantau = stack["services"]["pantau"]
    env = pantau["environment"]
    assert pantau["build"]["dockerfile"] == "deploy/Dockerfile"
    assert "pantau-state:/var/lib/pantau:rw" in pantau["volumes"]
    assert env["PANTAU_SERVICE__STATE_DIR"] == "/var/lib/pantau"
    assert env["PANTAU_MQTT__CLIENT_ID"] == "pantau-1"
    assert env["PANTAU_HTTP__PUBLIC_URL"] == "https://pantau.example.go.id"
    assert env["PANTAU_MQTT__TLS"] == "true"
    assert env["PANTAU_MQTT__PORT"] == "8883"
    assert "healthcheck" not in pantau  # the image's own
    assert "\nHEALTHCHECK " in (ROOT / "deploy/Dockerfile").read_text()
    # X-Forwarded-* believed from the proxy's fixed address only.
    caddy_ip = stack["services"]["caddy"]["networks"]["pantau"]["ipv4_address"]
    assert env["PANTAU_HTTP__FORWARDED_ALLOW_IPS"] == caddy_ip
    subnet = stack["networks"]["pantau"]["ipam"]["config"][0]["subnet"]
    assert caddy_ip.rsplit(".", 1)[0] == subnet.rsplit(".", 1)[0]


def test_every_mounted_repository_file_exists_and_is_the_checked_one(
    stack: dict[str, Any], deploy_copy: Path
) -> None:
    sources = {
        v.split(":", 1)[0]
        for service in stack["services"].values()
        for v in service.get("volumes", [])
        if v.startswith("/")
    }
    made_by_operator = {str(deploy_copy / "secrets"), str(deploy_copy / "grafana-export")}
    for source in sources:
        if any(source.startswith(m) for m in made_by_operator):
            continue
        assert Path(source).exists(), source
    # The files the other tests check with promtool, amtool, mosquitto and caddy.
    for checked in (
        "prometheus/prometheus.yml",
        "prometheus/rules",
        "alertmanager",
        "mosquitto/mosquitto.conf",
        "caddy/Caddyfile",
    ):
        assert str(deploy_copy / checked) in sources, checked


def test_grafana_mounts_what_pantau_grafana_export_writes(
    stack: dict[str, Any], deploy_copy: Path, tmp_path: Path
) -> None:
    out = deploy_copy / "grafana-export"
    env = {
        "PATH": "/usr/bin:/bin",
        "PANTAU_GRAFANA__POSTGRES_HOST": "timescaledb",
        "PANTAU_GRAFANA__PROMETHEUS_URL": "http://prometheus:9090",
        "PANTAU_HTTP__PUBLIC_URL": "https://pantau.example.go.id",
        "PANTAU_CONFIG": str(tmp_path / "none.toml"),
    }
    (tmp_path / "none.toml").write_text("")
    done = subprocess.run(
        [str(ROOT / ".venv/bin/pantau"), "grafana", "export", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    grafana = stack["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"] if v.startswith("/"))
    assert mounts[f"{out}/provisioning/datasources"] == "/etc/grafana/provisioning/datasources"
    assert mounts[f"{out}/provisioning/dashboards"] == "/etc/grafana/provisioning/dashboards"
    assert mounts[f"{out}/dashboards"] == "/var/lib/grafana/dashboards/pantau"
    for source in mounts:
        if source.startswith(str(out)):
            assert any(Path(source).iterdir()), f"export wrote nothing in {source}"
    datasources = (out / "provisioning/datasources/pantau.yaml").read_text()
    assert "timescaledb" in datasources
    assert "http://prometheus:9090" in datasources
    assert "GRAFANA_PANTAU_DB_PASSWORD" in datasources
    provider = (out / "provisioning/dashboards/pantau.yaml").read_text()
    assert "/var/lib/grafana/dashboards/pantau" in provider
    assert grafana["environment"]["GF_SERVER_ROOT_URL"] == "https://pantau.example.go.id/grafana/"


def test_pantau_takes_the_stack_environment(stack: dict[str, Any], tmp_path: Path) -> None:
    """`pantau config check` with the compose service's environment: every PANTAU_ variable is
    known (Pantau refuses unknown ones at start) and valid. The secret configuration file is a
    throwaway one here."""
    env = dict(stack["services"]["pantau"]["environment"])
    secret = tmp_path / "pantau.toml"
    secret.write_text(
        '[database]\nurl = "postgresql://pantau:throwaway@timescaledb:5432/pantau"\n'
        '[mqtt]\npassword = "throwaway"\n'
    )
    env["PANTAU_CONFIG"] = str(secret)
    done = subprocess.run(
        [str(ROOT / ".venv/bin/pantau"), "config", "check"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **{k: str(v) for k, v in env.items()}},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for line in (
        'forwarded_allow_ips = "172.30.0.10"',
        'alertmanager_urls = ["http://alertmanager:9093"]',
        'public_url = "https://pantau.example.go.id"',
        'state_dir = "/var/lib/pantau"',
        'client_id = "pantau-1"',
    ):
        assert line in done.stdout, line
