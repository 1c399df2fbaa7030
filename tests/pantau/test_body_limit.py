"""Every request body is bounded (`http.max_body_bytes`), tried on a real `pantau run`: an 84 MB
CSV import (the one that grew Pantau to 6.5 GB in issue 16) is refused quickly and cheaply, with
a `Content-Length` and chunked, and the service stays healthy throughout."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from pantau import auth
from pantau.embedded import MosquittoBroker
from tests.fixtures.pantau_proc import PantauProcess

LIMIT = 20 << 20  # the default
CSV_BYTES = 84_000_000
# Rows of ~300 bytes: the body limit (20 MiB) comes before the import's row limit (100,000).
NOTE = "Jl. Raya Setu, tiang PJU depan gapura perumahan, sisi kiri dari arah Cibitung " * 3


def csv_lines() -> Iterator[bytes]:
    """A devices CSV of CSV_BYTES bytes, made of plausible rows, in 64 KiB pieces."""
    header = b"device_id,name,device_type,kecamatan,latitude,longitude,address_note\n"
    yield header
    sent = len(header)
    n = 0
    chunk: list[bytes] = []
    size = 0
    while sent < CSV_BYTES:
        row = f"wl-bulk-{n:07d},Pos {n},water_level,setu,-6.35{n % 1000:03d},107.03456,{NOTE}\n"
        row = row.encode()
        row = row[: CSV_BYTES - sent]
        chunk.append(row)
        size += len(row)
        sent += len(row)
        n += 1
        if size >= 65536:
            yield b"".join(chunk)
            chunk, size = [], 0
    if chunk:
        yield b"".join(chunk)


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{field} not in /proc/{pid}/status")


class Watch:
    """While a request runs: /healthz asked every 100 ms and Pantau's RSS sampled."""

    def __init__(self, pantau: PantauProcess) -> None:
        assert pantau.proc is not None
        self.pid = pantau.proc.pid
        self.url = f"http://127.0.0.1:{pantau.port}/healthz"
        self.baseline = rss_bytes(self.pid)
        self.peak = self.baseline
        self.checks = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with httpx.Client(timeout=2) as http:
            while not self._stop.wait(0.1):
                self.peak = max(self.peak, rss_bytes(self.pid))
                try:
                    response = http.get(self.url)
                    if response.status_code != 200:
                        self.failures.append(f"/healthz {response.status_code}")
                except httpx.HTTPError as exc:
                    self.failures.append(f"/healthz {exc!r}")
                self.checks += 1

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


@pytest.fixture
def pantau(
    database_url: str, mosquitto: MosquittoBroker, tmp_path: Path
) -> Iterator[PantauProcess]:
    proc = PantauProcess(
        {
            "PANTAU_DATABASE__URL": database_url,
            "PANTAU_MQTT__HOST": "127.0.0.1",
            "PANTAU_MQTT__PORT": str(mosquitto.port),
            "PANTAU_MQTT__CLIENT_ID": f"pantau-body-{uuid.uuid4().hex[:6]}",
            "PANTAU_INGEST__SPOOL_DIR": str(tmp_path / "spool"),
        },
        tmp_path,
    )
    proc.start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def admin_token(database_url: str) -> str:
    async def make() -> str:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            return (await auth.create_token(conn, "body limit test", "admin", "test")).token

    return asyncio.run(make())


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_84_mb_import_is_refused_quickly_without_memory_growth(
    pantau: PantauProcess, database_url: str, framing: str
) -> None:
    token = admin_token(database_url)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "text/csv"}
    if framing == "content-length":
        content: bytes | Iterator[bytes] = b"".join(csv_lines())
        assert len(content) == CSV_BYTES
    else:
        content = csv_lines()  # a generator: httpx sends it chunked, with no Content-Length
    url = f"http://127.0.0.1:{pantau.port}/api/v1/devices/import"
    with Watch(pantau) as watch, httpx.Client(timeout=30) as http:
        started = time.monotonic()
        response = http.post(url, content=content, headers=headers)
        elapsed = time.monotonic() - started
        time.sleep(0.3)  # a few more health checks and RSS samples after the answer
    assert response.status_code == 413, response.text[:500]
    detail = response.json()["detail"]
    assert f"over the limit of {LIMIT} bytes (http.max_body_bytes)" in detail
    if framing == "content-length":
        assert detail.startswith(f"request body of {CSV_BYTES} bytes")
    # With a Content-Length the answer comes before a byte of the body is read; chunked, once
    # the route has read 20 MiB of it (the import spools the body to a temporary file first),
    # then the rest is discarded unread.
    print(f"\n{framing}: 413 after {elapsed:.2f}s, RSS growth {watch.growth / 2**20:.1f} MiB")
    assert elapsed < 2.0, f"answered after {elapsed:.2f}s"
    assert watch.growth < 50 << 20, f"Pantau's RSS grew by {watch.growth / 2**20:.0f} MiB"
    assert watch.checks >= 3
    assert watch.failures == []
    # Healthy after: ready, and a small import on the same route still goes through to the app.
    ready = httpx.get(f"http://127.0.0.1:{pantau.port}/readyz", timeout=5)
    assert ready.status_code == 200, ready.text
    small = httpx.post(url, content=b"device_id\n", headers=headers, timeout=10)
    assert small.status_code not in (413, 500), small.text
