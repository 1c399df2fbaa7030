"""A throwaway certificate authority made with `openssl` (Debian `openssl`), and a server
certificate it signs, for the deploy tests' TLS listeners."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class ServerCert:
    ca: Path
    cert: Path
    key: Path

    def context(self) -> ssl.SSLContext:
        """A client context that trusts this CA only."""
        return ssl.create_default_context(cafile=self.ca)


def make_server_cert(directory: Path, names: tuple[str, ...] = ("localhost",)) -> ServerCert:
    """A CA and a server certificate for `names` (DNS names, and IP:127.0.0.1) in `directory`,
    valid two days; every file readable by others (servers may run as their own user)."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is missing: install the Debian package `openssl`")
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)

    def run(*args: str) -> None:
        done = subprocess.run(["openssl", *args], cwd=directory, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=pantau-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    )
    san = ",".join([*(f"DNS:{n}" for n in names), "IP:127.0.0.1"])
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        f"/CN={names[0]}",
        "-addext",
        f"subjectAltName={san}",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    )
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-copy_extensions",
        "copy",
        "-out",
        "server.crt",
    )
    for path in directory.iterdir():
        path.chmod(0o644)
    return ServerCert(directory / "ca.crt", directory / "server.crt", directory / "server.key")
