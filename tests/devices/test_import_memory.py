"""An import at the row limit against a real `pantau run`: its peak resident memory stays
bounded (read from /proc), and the service answers while it works."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from pantau import auth
from pantau.embedded import MosquittoBroker
from pantau.regency import KECAMATAN
from tests.fixtures.pantau_proc import PantauProcess

HEADER = "device_id,name,device_type,kecamatan,latitude,longitude,address_note,install_date\n"


@dataclass
class Service:
    process: PantauProcess
    url: str
    token: str

    def client(self, timeout: float = 300) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=timeout
        )

    def peak_rss_bytes(self) -> int:
        assert self.process.proc is not None
        status = Path(f"/proc/{self.process.proc.pid}/status").read_text()
        [line] = [x for x in status.splitlines() if x.startswith("VmHWM:")]
        return int(line.split()[1]) * 1024


def start_service(database_url: str, broker_port: int, workdir: Path) -> Iterator[Service]:
    async def token() -> str:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            return (await auth.create_token(conn, "import", "technician", "test")).token

    process = PantauProcess(
        {
            "PANTAU_DATABASE__URL": database_url,
            "PANTAU_MQTT__HOST": "127.0.0.1",
            "PANTAU_MQTT__PORT": str(broker_port),
            "PANTAU_MQTT__CLIENT_ID": f"pantau-import-{uuid.uuid4().hex[:6]}",
            "PANTAU_INGEST__SPOOL_DIR": str(workdir / "spool"),
        },
        workdir,
    )
    process.start()
    try:
        process.wait_ready()
        yield Service(process, f"http://127.0.0.1:{process.port}", asyncio.run(token()))
    finally:
        process.stop()


@pytest.fixture
def service(database_url: str, mosquitto: MosquittoBroker, tmp_path: Path) -> Iterator[Service]:
    yield from start_service(database_url, mosquitto.port, tmp_path)


def device_rows(count: int, prefix: str = "wl") -> Iterator[bytes]:
    """A CSV of `count` devices in the regency, produced as it is sent."""
    yield HEADER.encode()
    names = [k.id for k in KECAMATAN]
    chunk = []
    for i in range(count):
        chunk.append(
            f"{prefix}-{i:06d},Pintu air {i},water_level,{names[i % len(names)]},"
            f"-6.{300 + i % 90},107.{5 + i % 25:02d},Jl. Raya no. {i},2026-11-01\n"
        )
        if len(chunk) == 1000:
            yield "".join(chunk).encode()
            chunk = []
    yield "".join(chunk).encode()


def test_import_at_the_row_limit_keeps_memory_bounded(service: Service) -> None:
    before = service.peak_rss_bytes()
    healthy: list[int] = []
    done = threading.Event()

    def probe() -> None:  # the service answers while the import works
        with httpx.Client(base_url=service.url, timeout=10) as http:
            while not done.is_set():
                healthy.append(http.get("/healthz").status_code)
                done.wait(0.5)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        t0 = time.monotonic()
        with service.client() as http:
            answer = http.post(
                "/api/v1/devices/import",
                content=device_rows(100_000),
                headers={"Content-Type": "text/csv"},
            )
        took = time.monotonic() - t0
    finally:
        done.set()
        prober.join(15)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"created": 100_000, "updated": 0, "unchanged": 0}
    peak = service.peak_rss_bytes()
    print(f"\n100,000-row import: {took:.1f} s; peak RSS {before >> 20} -> {peak >> 20} MiB")
    assert peak < 300 * 1024 * 1024, f"peak RSS {peak >> 20} MiB"
    assert healthy
    assert set(healthy) == {200}


@pytest.mark.slow
def test_xlsx_import_at_the_row_limit_keeps_memory_bounded(
    service: Service, tmp_path: Path
) -> None:
    """A workbook as Excel saves it (shared strings), 100,000 rows."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    rows = iter(device_rows(100_000))
    text = b"".join(rows).decode()
    for line in text.splitlines():
        cells: list[object] = line.split(",")
        if cells[0] != "device_id":
            cells[4], cells[5] = float(str(cells[4])), float(str(cells[5]))
        sheet.append(cells)
    path = tmp_path / "big.xlsx"
    book.save(path)
    del book, sheet, text
    t0 = time.monotonic()
    with service.client() as http, path.open("rb") as body:
        answer = http.post(
            "/api/v1/devices/import",
            content=body,
            headers={
                "Content-Type": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
            },
        )
    took = time.monotonic() - t0
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"created": 100_000, "updated": 0, "unchanged": 0}
    peak = service.peak_rss_bytes()
    size = path.stat().st_size
    print(f"\n100,000-row XLSX ({size >> 20} MiB) import: {took:.1f} s; peak RSS {peak >> 20} MiB")
    assert peak < 300 * 1024 * 1024, f"peak RSS {peak >> 20} MiB"
