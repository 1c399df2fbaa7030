"""deploy/caddy/Caddyfile: `caddy validate`, then Caddy (Debian `caddy`) run with it in front of
a real `pantau run`, its certificate from a throwaway CA: /readyz and /m/ over HTTPS (the CA
verified), HTTP redirected to HTTPS, HSTS, and X-Forwarded-Proto believed by Pantau from the
proxy's address only (http.forwarded_allow_ips)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pantau.auth import cleartext_warning
from pantau.embedded import MosquittoBroker, free_port
from pantau.settings import HttpSettings
from tests.fixtures.pantau_proc import PantauProcess, wait_for
from tests.fixtures.tls import ServerCert, make_server_cert

ROOT = Path(__file__).resolve().parents[2]
CADDYFILE = ROOT / "deploy/caddy/Caddyfile"
HSTS = "max-age=31536000"


def _caddy() -> str:
    path = shutil.which("caddy")
    if path is None:
        pytest.fail(
            "caddy is missing: install the Debian package `caddy` (deploy/debian-packages.sh)"
        )
    return path


def _caddy_env(tmp: Path, tls: str, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp),
        "XDG_DATA_HOME": str(tmp / "data"),
        "XDG_CONFIG_HOME": str(tmp / "config"),
        "PANTAU_PUBLIC_HOST": "localhost",
        "CADDY_TLS": tls,
        **extra,
    }


def test_caddyfile_validates_for_acme_and_for_certificate_files(tmp_path: Path) -> None:
    certs = make_server_cert(tmp_path / "certs")
    for tls in ("it@bekasikab.go.id", f"{certs.cert} {certs.key}"):
        done = subprocess.run(
            [_caddy(), "validate", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
            env=_caddy_env(tmp_path, tls, PANTAU_PUBLIC_HOST="pantau.bekasikab.go.id"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "Valid configuration" in done.stdout + done.stderr
    formatted = subprocess.run(
        [_caddy(), "fmt", str(CADDYFILE)], capture_output=True, text=True, check=True
    )
    assert formatted.stdout == CADDYFILE.read_text(), "run `caddy fmt --overwrite` on it"


@dataclass
class Stack:
    pantau: PantauProcess
    https: str
    http: str
    tls: ServerCert


@pytest.fixture
def stack(database_url: str, mosquitto: MosquittoBroker, tmp_path: Path) -> Iterator[Stack]:
    tls = make_server_cert(tmp_path / "certs")
    https_port, http_port = free_port(), free_port()
    https = f"https://localhost:{https_port}"
    pantau = PantauProcess(
        {
            "PANTAU_DATABASE__URL": database_url,
            "PANTAU_MQTT__HOST": "127.0.0.1",
            "PANTAU_MQTT__PORT": str(mosquitto.port),
            "PANTAU_MQTT__CLIENT_ID": f"pantau-proxy-{uuid.uuid4().hex[:6]}",
            "PANTAU_INGEST__SPOOL_DIR": str(tmp_path / "spool"),
            "PANTAU_HTTP__PUBLIC_URL": https,
            # Caddy reaches Pantau from 127.0.0.1; "elsewhere" is 127.0.0.2 below.
            "PANTAU_HTTP__FORWARDED_ALLOW_IPS": "127.0.0.1",
        },
        tmp_path,
    )
    env = _caddy_env(
        tmp_path,
        f"{tls.cert} {tls.key}",
        CADDY_ADMIN="off",
        CADDY_HTTP_PORT=str(http_port),
        CADDY_HTTPS_PORT=str(https_port),
        PANTAU_UPSTREAM=f"127.0.0.1:{pantau.port}",
        GRAFANA_UPSTREAM=f"127.0.0.1:{free_port()}",  # no Grafana here
    )
    log = tmp_path / "caddy.log"
    pantau.start()
    with log.open("wb") as out:
        caddy = subprocess.Popen(
            [_caddy(), "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        pantau.wait_ready()

        def through_proxy() -> bool:
            assert caddy.poll() is None, log.read_text()
            return httpx.get(f"{https}/healthz", verify=tls.context(), timeout=2).status_code == 200

        wait_for("Pantau through Caddy", through_proxy, timeout=30)
        yield Stack(pantau, https, f"http://localhost:{http_port}", tls)
    finally:
        caddy.terminate()
        caddy.wait(10)
        pantau.stop()


def test_pantau_over_https_through_the_proxy(stack: Stack) -> None:
    with httpx.Client(verify=stack.tls.context(), timeout=10) as client:
        ready = client.get(f"{stack.https}/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.headers["strict-transport-security"] == HSTS
        phone = client.get(f"{stack.https}/m/")
        assert phone.status_code == 200
        assert "text/html" in phone.headers["content-type"]
        assert phone.headers["strict-transport-security"] == HSTS
        # Prometheus scrapes Pantau on the stack's own network; the proxy does not serve it.
        assert client.get(f"{stack.https}/metrics").status_code == 404
    assert "clear text" not in stack.pantau.log.read_text()  # its links are https://
    # The throwaway CA is what makes it trusted: without it the handshake is refused.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{stack.https}/readyz", timeout=10)


def test_http_is_redirected_to_https(stack: Stack) -> None:
    answer = httpx.get(f"{stack.http}/m/?x=1", timeout=10)
    assert answer.status_code in (301, 308), answer
    # To the default HTTPS port, 443: the stack's (Caddy 2.6 leaves a test's other port out).
    assert answer.headers["location"] == "https://localhost/m/?x=1"


def test_forwarded_proto_is_believed_from_the_proxy_only(stack: Stack) -> None:
    # /readyz/ is redirected to /readyz by an absolute URL made from the request: its scheme is
    # the one Pantau believes the request came with.
    via_proxy = httpx.get(f"{stack.https}/readyz/", verify=stack.tls.context(), timeout=10)
    assert via_proxy.status_code == 307, via_proxy
    assert via_proxy.headers["location"] == f"{stack.https}/readyz"

    direct = f"http://127.0.0.1:{stack.pantau.port}/readyz/"
    claim = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    elsewhere = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(transport=elsewhere, timeout=10) as client:
        spoofed = client.get(direct, headers=claim)
    assert spoofed.status_code == 307, spoofed
    assert spoofed.headers["location"] == f"http://127.0.0.1:{stack.pantau.port}/readyz"
    # From the proxy's own address the same header counts (the proxy overwrites it).
    trusted = httpx.get(direct, headers=claim, timeout=10)
    assert trusted.headers["location"] == f"https://127.0.0.1:{stack.pantau.port}/readyz"


def test_a_cleartext_link_off_this_machine_is_warned_about() -> None:
    assert cleartext_warning(HttpSettings(public_url="https://pantau.bekasikab.go.id")) is None
    assert cleartext_warning(HttpSettings(host="127.0.0.1")) is None
    assert cleartext_warning(HttpSettings(public_url="http://localhost:8080")) is None
    warning = cleartext_warning(HttpSettings(public_url="http://192.168.1.20:8080"))
    assert warning is not None
    assert "clear text" in warning
    assert cleartext_warning(HttpSettings(host="0.0.0.0", public_url="http://[::1]:8080")) is None


def test_forwarded_allow_ips_default_trusts_nobody() -> None:
    assert HttpSettings().trusted_proxies() == []
    assert HttpSettings(forwarded_allow_ips=" 172.30.0.10, 10.0.0.0/8 ").trusted_proxies() == [
        "172.30.0.10",
        "10.0.0.0/8",
    ]
    with pytest.raises(ValueError, match="not an IP address or network"):
        HttpSettings(forwarded_allow_ips="*")


def test_pantau_warns_at_start_when_its_links_are_cleartext_off_the_machine(
    database_url: str, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    pantau = PantauProcess(
        {
            "PANTAU_DATABASE__URL": database_url,
            "PANTAU_MQTT__HOST": "127.0.0.1",
            "PANTAU_MQTT__PORT": str(mosquitto.port),
            "PANTAU_MQTT__CLIENT_ID": f"pantau-cleartext-{uuid.uuid4().hex[:6]}",
            "PANTAU_INGEST__SPOOL_DIR": str(tmp_path / "spool"),
            "PANTAU_HTTP__PUBLIC_URL": "http://192.0.2.10:8080",
        },
        tmp_path,
    )
    pantau.start()
    try:
        pantau.wait_ready()
        wait_for(
            "the clear-text warning",
            lambda: "tokens would cross the network in clear text" in pantau.log.read_text(),
            timeout=10,
        )
    finally:
        pantau.stop()
