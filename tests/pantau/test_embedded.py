import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import pytest

from pantau.embedded import (
    CameraServer,
    MosquittoBroker,
    PostgresCluster,
    find_mosquitto,
    find_postgres_bin,
    free_port,
    port_is_free,
)
from pantau.errors import EmbeddedStackError, MissingDependency


def test_missing_postgres_names_the_debian_package(tmp_path: Path) -> None:
    with pytest.raises(MissingDependency, match=r"install the Debian package postgresql-15"):
        find_postgres_bin(tmp_path)


def test_missing_mosquitto_names_the_debian_package() -> None:
    with pytest.raises(MissingDependency, match=r"install the Debian package mosquitto"):
        find_mosquitto("mosquitto-not-installed")


def test_python_without_gstreamer_names_the_debian_packages(tmp_path: Path) -> None:
    # The virtualenv's python has no gi: as a system python3 without python3-gi.
    for python in (sys.executable, str(tmp_path / "no-python3")):
        server = CameraServer(tmp_path / "cameras.log", port=0, python=python)
        with pytest.raises(MissingDependency, match=r"gir1\.2-gst-rtsp-server-1\.0"):
            server.start()
        assert server.pid is None


def test_installed_programs_are_found() -> None:
    assert (find_postgres_bin() / "initdb").is_file()
    assert Path(find_mosquitto()).name == "mosquitto"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands directories to service users")
def test_unreachable_data_dir_is_explained() -> None:
    private = Path(tempfile.mkdtemp(prefix="pantau-private-"))  # 0700, as mkdtemp makes it
    try:
        cluster = PostgresCluster(
            private / "pg", private / "run", private / "pg.log", port=free_port()
        )
        with pytest.raises(EmbeddedStackError, match=rf"chmod o\+x {private}"):
            cluster.init(fast=True)
    finally:
        shutil.rmtree(private)


def test_broker_that_cannot_start_reports_its_log() -> None:
    base = Path(tempfile.mkdtemp(prefix="pantau-mqtt-"))
    base.chmod(0o755)
    try:
        broker = MosquittoBroker(base, port=free_port(), extra_config=["no_such_option on"])
        with pytest.raises(EmbeddedStackError, match=r"Mosquitto exited at start.*no_such_option"):
            broker.start()
    finally:
        shutil.rmtree(base)


def test_a_listening_port_is_not_free() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert not port_is_free(sock.getsockname()[1])
    assert port_is_free(free_port())
