"""/wall in real headless Chromium (Debian `chromium`, driven by Playwright) at 1920x1080, against
a real `pantau run` on the test's PostgreSQL and Mosquitto, with test cameras probed for real
(GStreamer's RTSP server). Every device state comes through the real path: readings and status
messages published over MQTT, ingested, judged by the outage detector (area outage, value
alarm), camera pictures probed and judged.

The page signs in from its link, shows the regency, never asks anything of a host other than
127.0.0.1 (every request is intercepted and checked), turns a kecamatan's tile within one refresh
of its device going down, keeps its data under a banner while Pantau is killed and recovers by
itself when Pantau is back, reloads on a new page version, and says so when its token is revoked.

The screenshot of the realistic state is saved to docs/screenshots/wall.png (the banner's in the
test's temp dir, path printed): look at them as an operator three metres away would."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psycopg
import pytest
from playwright.async_api import Browser, Page, Route, async_playwright, expect

from devices import registry
from devices.models import DeviceIn
from pantau import auth
from pantau.embedded import MosquittoBroker, PostgresCluster, free_port
from tests.devices.test_phone_page import ARGS, CHROMIUM
from tests.fixtures.mqtt import Publisher
from tests.fixtures.pantau_proc import PantauProcess, wait_for
from tests.fixtures.rtsp import RtspServer

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "screenshots" / "wall.png"
REFRESH_SECONDS = 2.0
LOCAL = {"127.0.0.1"}
LOCAL_SCHEMES = ("data:", "blob:", "about:")
ENGLISH = ("down", "late", "unknown", "area", "outage", "camera", "offline", "since", "error",
           "critical", "warning", "frozen", "level", "pending", "refused")  # fmt: skip

# (device id, type, kecamatan, name): two or three sensors in most kecamatan, none in
# Bojongmangu (an empty tile), four in Cibitung (three of them go dark: an area outage).
SENSORS: list[tuple[str, str, str, str]] = [
    ("wl-muaragembong-01", "water_level", "muaragembong", "Muara Citarum"),
    ("sl-muaragembong-01", "street_light", "muaragembong", "PJU Pantai Bahagia"),
    ("rg-sukawangi-01", "rain_gauge", "sukawangi", "Penakar Sukawangi"),
    ("tc-cabangbungin-01", "traffic_counter", "cabangbungin", "Simpang Cabangbungin"),
    ("aq-tarumajaya-01", "air_quality", "tarumajaya", "ISPU Tarumajaya"),
    ("wl-babelan-01", "water_level", "babelan", "Kali CBL Babelan"),
    ("rg-babelan-01", "rain_gauge", "babelan", "Penakar Babelan"),
    ("sl-sukatani-01", "street_light", "sukatani", "PJU Sukatani"),
    ("wl-sukatani-01", "water_level", "sukatani", "Kali Cikarang Sukatani"),
    ("tc-sukakarya-01", "traffic_counter", "sukakarya", "Simpang Sukakarya"),
    ("rg-pebayuran-01", "rain_gauge", "pebayuran", "Penakar Pebayuran"),
    ("tc-tambun-utara-01", "traffic_counter", "tambun-utara", "Simpang Tambun Utara"),
    ("sl-tambelang-01", "street_light", "tambelang", "PJU Tambelang"),
    ("aq-karangbahagia-01", "air_quality", "karangbahagia", "ISPU Karangbahagia"),
    ("rg-kedungwaringin-01", "rain_gauge", "kedungwaringin", "Penakar Kedungwaringin"),
    ("wl-tambun-selatan-01", "water_level", "tambun-selatan", "Kali Bekasi Tambun"),
    ("tc-tambun-selatan-01", "traffic_counter", "tambun-selatan", "Simpang Tambun"),
    ("wl-cibitung-01", "water_level", "cibitung", "Kali Cikarang Cibitung"),
    ("rg-cibitung-01", "rain_gauge", "cibitung", "Penakar Cibitung"),
    ("tc-cibitung-01", "traffic_counter", "cibitung", "Simpang Cibitung"),
    ("sl-cibitung-01", "street_light", "cibitung", "PJU Cibitung"),
    ("tc-cikarang-barat-01", "traffic_counter", "cikarang-barat", "Simpang Cikarang Barat"),
    ("aq-cikarang-utara-01", "air_quality", "cikarang-utara", "ISPU Cikarang Utara"),
    ("sl-cikarang-timur-01", "street_light", "cikarang-timur", "PJU Cikarang Timur"),
    ("aq-setu-01", "air_quality", "setu", "ISPU Setu"),
    ("wl-setu-01", "water_level", "setu", "Situ Setu"),
    ("tc-cikarang-selatan-01", "traffic_counter", "cikarang-selatan", "Simpang Lippo"),
    ("tc-cikarang-pusat-01", "traffic_counter", "cikarang-pusat", "Simpang Pemda"),
    ("rg-cibarusah-01", "rain_gauge", "cibarusah", "Penakar Cibarusah"),
    ("sl-serang-baru-01", "street_light", "serang-baru", "PJU Serang Baru"),
]
METRIC = {
    "water_level": "water_level_cm",
    "rain_gauge": "rain_mm",
    "air_quality": "pm25_ugm3",
    "traffic_counter": "vehicles",
    "street_light": "power_w",
}
VALUES = {  # over Siaga 2 (450 cm), over Siaga 3 (350 cm); the rest calm
    "wl-babelan-01": 472,
    "wl-muaragembong-01": 381,
    "wl-tambun-selatan-01": 236,
    "wl-setu-01": 142,
    "wl-sukatani-01": 188,
    "aq-setu-01": 38,
}
GO_DARK = ("wl-cibitung-01", "rg-cibitung-01", "tc-cibitung-01", "aq-setu-01")
CAMERAS = [  # device id, kecamatan, name, mount (None: an address nobody answers at)
    ("cam-tambun-selatan-01", "tambun-selatan", "CCTV Simpang Tambun", "moving"),
    ("cam-cikarang-utara-01", "cikarang-utara", "CCTV Stasiun Cikarang", "moving"),
    ("cam-babelan-01", "babelan", "CCTV Pintu Air Babelan", "frozen"),
    ("cam-cikarang-pusat-01", "cikarang-pusat", "CCTV Kantor Bupati", None),
]


@dataclass
class Stack:
    db: str
    pantau: PantauProcess
    publisher: Publisher

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.pantau.port}"

    def publish(self, kecamatan: str, device: str, leaf: str, payload: str) -> None:
        topic = f"bekasi/{kecamatan}/{device}/{leaf}"
        self.publisher.wait(self.publisher.publish([(topic, payload)]))

    def rows(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db, autocommit=True) as conn:
            return conn.execute(query, args).fetchall()

    async def token(self, name: str) -> auth.CreatedToken:
        async with await psycopg.AsyncConnection.connect(self.db, autocommit=True) as conn:
            return await auth.create_token(conn, name, "operator", "test")


async def _register(db: str, rtsp: RtspServer, dead_port: int) -> None:
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
        for device_id, kind, kecamatan, name in SENSORS:
            await registry.create_device(
                conn,
                DeviceIn.model_validate(
                    {
                        "device_id": device_id,
                        "name": name,
                        "device_type": kind,
                        "kecamatan": kecamatan,
                        "expected_interval_seconds": 3600,  # up for the whole module
                    }
                ),
                "test",
            )
        for device_id, kecamatan, name, mount in CAMERAS:
            await registry.create_device(
                conn,
                DeviceIn.model_validate(
                    {
                        "device_id": device_id,
                        "name": name,
                        "device_type": "camera",
                        "kecamatan": kecamatan,
                    }
                ),
                "test",
            )
            url = rtsp.url(mount) if mount else f"rtsp://127.0.0.1:{dead_port}/live"
            await conn.execute(
                "INSERT INTO cameras (device_id, rtsp_url, probe_interval_seconds)"
                " VALUES (%s, %s, 2)",
                (device_id, url),
            )


@pytest.fixture(scope="module")
def stack(
    postgres_cluster: PostgresCluster,
    mosquitto: MosquittoBroker,
    rtsp_server: RtspServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    postgres_cluster.create_database(name)
    db = postgres_cluster.dsn(name)
    workdir = tmp_path_factory.mktemp("wall")
    pantau = PantauProcess(
        {
            "PANTAU_DATABASE__URL": db,
            "PANTAU_MQTT__HOST": "127.0.0.1",
            "PANTAU_MQTT__PORT": str(mosquitto.port),
            "PANTAU_MQTT__CLIENT_ID": f"pantau-wall-{uuid.uuid4().hex[:6]}",
            "PANTAU_INGEST__SPOOL_DIR": str(workdir / "spool"),
            "PANTAU_DATABASE__CONNECT_TIMEOUT_SECONDS": "2",
            "PANTAU_OUTAGES__DETECTOR_INTERVAL_SECONDS": "1",
            "PANTAU_STREAMS__SNAPSHOT_DIR": str(workdir / "snapshots"),
            "PANTAU_STREAMS__STAGGER_SECONDS": "0",
            "PANTAU_GRAFANA__WALL_REFRESH_SECONDS": str(REFRESH_SECONDS),
            "PANTAU_STORAGE__ROLLUP_REFRESH_SECONDS": "2",
        },
        workdir,
    )
    pantau.start()
    publisher: Publisher | None = None
    try:
        pantau.wait_ready()
        asyncio.run(_register(db, rtsp_server, free_port()))
        publisher = Publisher(mosquitto.port)
        stack = Stack(db, pantau, publisher)
        for device_id, kind, kecamatan, _ in SENSORS:
            value = VALUES.get(device_id, 40)
            stack.publish(kecamatan, device_id, METRIC[kind], str(value))
        for device_id in GO_DARK:
            kecamatan = next(s[2] for s in SENSORS if s[0] == device_id)
            stack.publish(kecamatan, device_id, "status", "offline")
        try:
            wait_for(
                "the detector's verdicts: an area outage, a river over Siaga 2, a frozen camera",
                lambda: _settled(stack),
                timeout=90,
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{_camera_story(stack)}") from None
        yield stack
    finally:
        if publisher is not None:
            publisher.close()
        pantau.stop()
        print(f"pantau log: {pantau.log}")


def _settled(stack: Stack) -> bool | str:
    up = stack.rows("SELECT count(*) FROM device_liveness WHERE state = 'up'")[0][0]
    area = stack.rows("SELECT count(*) FROM outages WHERE kind = 'area' AND ended_at IS NULL")
    alarm = stack.rows(
        "SELECT level FROM outages WHERE kind = 'alarm' AND ended_at IS NULL"
        " AND device_id = 'wl-babelan-01'"
    )
    cams = dict(
        stack.rows("SELECT device_id, state FROM wall.device_state WHERE device_type = 'camera'")
    )
    pictures = stack.rows("SELECT count(DISTINCT device_id) FROM camera_snapshots")[0][0]
    rolled = stack.rows("SELECT readings_5m FROM wall.pipeline")[0][0]
    seen = (up, area[0][0], alarm, cams, pictures, rolled)
    ok = (
        up >= len(SENSORS) - len(GO_DARK) + 2
        and area[0][0] == 1
        and alarm == [("Siaga 2",)]
        and cams.get("cam-babelan-01") == "down"
        and cams.get("cam-cikarang-pusat-01") == "down"
        and pictures >= 2
        and rolled > 0
    )
    return True if ok else repr(seen)


def _camera_story(stack: Stack) -> str:
    """What the probes last reported and what Pantau logged about cameras: a setup that timed out
    on a loaded CI machine says why."""
    health = stack.rows(
        "SELECT DISTINCT ON (device_id) device_id, time, state, reason, packets"
        " FROM camera_health ORDER BY device_id, time DESC"
    )
    lines = [
        line
        for line in stack.pantau.log.read_text(errors="replace").splitlines()
        if "camera" in line or "ERROR" in line or "Traceback" in line
    ]
    return f"last camera_health rows: {health!r}\npantau log, cameras:\n" + "\n".join(lines[-40:])


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not shutil.which("chromium"):
        pytest.fail("headless Chromium is missing: install the Debian package chromium")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        await browser.close()


@dataclass
class Wall:
    page: Page
    outside: list[str]
    api_hosts: set[str]
    errors: list[str]


async def open_wall(browser: Browser, url: str) -> Wall:
    """A 1920x1080 kiosk screen in WIB, every request checked: one for another host than
    127.0.0.1 is recorded and refused."""
    context = await browser.new_context(
        viewport={"width": 1920, "height": 1080},
        locale="id-ID",
        timezone_id="Asia/Jakarta",
    )
    wall = Wall(await context.new_page(), [], set(), [])
    # The page's own errors (a script error, a blocked request, a content-security violation).
    wall.page.on("pageerror", lambda exc: wall.errors.append(str(exc)))
    wall.page.on("console", lambda m: wall.errors.append(m.text) if m.type == "error" else None)

    async def guard(route: Route) -> None:
        where = urlparse(route.request.url)
        if route.request.url.startswith(LOCAL_SCHEMES) or where.hostname in LOCAL:
            wall.api_hosts.add(where.hostname or "")
            await route.continue_()
        else:
            wall.outside.append(route.request.url)
            await route.abort()

    await context.route("**/*", guard)
    await wall.page.goto(url)
    return wall


async def rendered(page: Page, more_than: int = 0) -> int:
    """Wait until the page has drawn the data more than `more_than` times; the count."""
    # Through the locator API: the page's Content-Security-Policy forbids eval, which
    # wait_for_function's string predicates need. Renders only ever count up.
    body = page.locator("body")
    if more_than == 0:
        await expect(body).to_have_attribute("data-renders", re.compile(r"^\d+$"), timeout=20_000)
    else:
        await expect(body).not_to_have_attribute("data-renders", str(more_than), timeout=20_000)
    return int(await page.evaluate("Number(document.body.dataset.renders)"))


async def tile_state(page: Page, kecamatan: str) -> str | None:
    return await page.get_attribute(f'.tile[data-kecamatan="{kecamatan}"]', "data-state")


# Notes in window.__turned when the tile of kecamatan `k` first shows `down`.
TURNED = """
(k) => {
  window.__turned = null;
  new MutationObserver(() => {
    const tile = document.querySelector(`.tile[data-kecamatan="${k}"]`);
    if (window.__turned === null && tile && tile.dataset.state === 'down') {
      window.__turned = Date.now();
    }
  }).observe(document.getElementById('tiles'), {childList: true});
}
"""


# Every element holding text of its own, with its font size and whether it is a number's.
SIZES = """
() => {
  const found = [];
  for (const el of document.querySelectorAll('#stage *')) {
    if (el.closest('[hidden]') || el.offsetParent === null) continue;
    const own = [...el.childNodes].filter(n => n.nodeType === 3 && n.textContent.trim());
    if (!own.length) continue;
    const size = parseFloat(getComputedStyle(el).fontSize);
    found.push({text: own.map(n => n.textContent.trim()).join(' '), size,
                number: el.classList.contains('num'), cls: el.className});
  }
  return found;
}
"""


async def test_the_wall_signs_in_from_its_link_and_shows_the_regency(
    stack: Stack, browser: Browser
) -> None:
    token = (await stack.token("Dinding ruang komando")).token
    wall = await open_wall(browser, f"{stack.url}/wall#token={token}")
    page = wall.page
    await rendered(page)

    # Signed in from the link: the token is kept and gone from the address bar.
    assert page.url == f"{stack.url}/wall"
    assert await page.evaluate("localStorage.getItem('pantau-wall-token')") == token

    # The map: 23 tiles; the area outage, a device down, an empty kecamatan, the rest normal.
    await expect(page.locator(".tile[data-kecamatan]")).to_have_count(23)
    assert await tile_state(page, "cibitung") == "area"
    assert await tile_state(page, "setu") == "down"
    assert await tile_state(page, "bojongmangu") == "empty"
    assert await tile_state(page, "sukatani") == "up"
    cibitung = page.locator('.tile[data-kecamatan="cibitung"]')
    await expect(cibitung).to_contain_text("3/4")
    await expect(cibitung).to_contain_text("Gangguan wilayah")
    await expect(page.locator('.tile[data-kecamatan="sukatani"]')).to_contain_text("Normal")

    # Outages: the area outage first, since-when in WIB, causes in Indonesian.
    first = page.locator("#outage-list li").first
    await expect(first).to_contain_text("WILAYAH")
    await expect(first).to_contain_text("Cibitung")
    await expect(first).to_contain_text("3 dari 4 perangkat mati")
    await expect(first).to_contain_text(re.compile(r"sejak \d\d\.\d\d WIB"))
    await expect(page.locator("#outage-list")).to_contain_text("ISPU Setu")
    await expect(page.locator("#outage-list")).to_contain_text("luring")

    # The river over Siaga 2, with its three levels marked.
    babelan = page.locator('.gauge[data-device="wl-babelan-01"]')
    await expect(babelan).to_contain_text("472")
    await expect(babelan).to_contain_text("Siaga 2")
    await expect(babelan.locator(".mark")).to_have_count(3)
    assert await page.locator("#flood-list .gauge").first.get_attribute("data-device") == (
        "wl-babelan-01"  # the highest level first
    )

    # Cameras: the down ones first, each with its picture (or the placeholder), loaded.
    await expect(page.locator(".cam")).to_have_count(4)
    assert await page.locator(".cam").first.get_attribute("data-state") == "down"
    for img in await page.locator(".cam img").all():
        await expect(img).to_have_js_property("complete", True)
        assert await img.evaluate("i => i.naturalWidth") > 0
    await expect(page.locator('.cam[data-device="cam-cikarang-pusat-01"]')).to_contain_text("Mati")

    # Pipeline, the pillars, the totals.
    await expect(page.locator("#pipeline-grid")).to_contain_text("Terhubung")
    await expect(page.locator("#pillar-table tbody tr")).to_have_count(6)
    await expect(page.locator('.total[data-state="area"] .num')).to_have_text("1")

    # Legible from three metres: text 22 px and more, numbers 48 px and more.
    sizes = await page.evaluate(SIZES)
    small = [s for s in sizes if s["size"] < 22]
    assert not small, small
    numbers = [s for s in sizes if s["number"] and s["size"] < 48]
    assert not numbers, numbers

    # Nothing cut off where a word matters: the tiles' names and states, the pipeline's labels.
    cut = await page.evaluate(
        "[...document.querySelectorAll('.tile .name, .tile .word, #pipeline-grid .label,"
        " .total .word')].filter(e => e.scrollWidth > e.clientWidth + 1)"
        ".map(e => [e.textContent, e.scrollWidth, e.clientWidth, e.className])"
    )
    assert cut == [], cut

    # Bahasa Indonesia: none of the API's English words on the screen.
    shown = await page.locator("#stage").inner_text()
    english = [w for w in ENGLISH if re.search(rf"\b{w}\b", shown, re.IGNORECASE)]
    assert not english, english

    await page.screenshot(path=str(SCREENSHOT))
    print(f"screenshot: {SCREENSHOT}")
    assert wall.outside == []
    assert wall.api_hosts == LOCAL
    assert wall.errors == []


async def test_a_device_going_down_turns_its_tile_within_one_refresh(
    stack: Stack, browser: Browser
) -> None:
    """The real path: the device says `offline` on its status topic; Pantau ingests it
    (pantau_report_status), the detector judges it down at once; the next refresh shows it."""
    token = (await stack.token("Dinding 2")).token
    wall = await open_wall(browser, f"{stack.url}/wall#token={token}")
    await rendered(wall.page)
    assert await tile_state(wall.page, "sukatani") == "up"
    # The page notes the moment the tile turns (its clock is this machine's), so the time
    # measured is the page's, not this test's polling.
    await wall.page.evaluate(TURNED, "sukatani")

    stack.publish("sukatani", "wl-sukatani-01", "status", "offline")
    wait_for(
        "the detector has wl-sukatani-01 down",
        lambda: (
            stack.rows("SELECT state FROM device_liveness WHERE device_id = 'wl-sukatani-01'")
            == [("down",)]
        ),
        timeout=20,
        step=0.05,
    )
    judged = time.time()
    await expect(wall.page.locator('.tile[data-kecamatan="sukatani"]')).to_have_attribute(
        "data-state", "down", timeout=(REFRESH_SECONDS + 5) * 1000
    )
    took = await wall.page.evaluate("window.__turned") / 1000 - judged
    print(f"the tile turned {took:.2f} s after the detector's verdict")
    assert took <= REFRESH_SECONDS + 1.0, f"the tile turned {took:.1f} s after the verdict"
    tile = wall.page.locator('.tile[data-kecamatan="sukatani"]')
    await expect(tile).to_contain_text("1/2")
    await expect(tile).to_contain_text("Mati")
    assert wall.outside == []


async def test_the_wall_keeps_its_data_while_pantau_is_away_and_recovers(
    stack: Stack, browser: Browser, tmp_path: Path
) -> None:
    token = (await stack.token("Dinding 3")).token
    wall = await open_wall(browser, f"{stack.url}/wall#token={token}")
    page = wall.page
    await rendered(page)
    before = await page.locator("#tiles").inner_text()

    stack.pantau.kill()
    banner = page.locator("#banner")
    await expect(banner).to_be_visible(timeout=(REFRESH_SECONDS + 10) * 1000)
    await expect(banner).to_contain_text(re.compile(r"KONEKSI TERPUTUS sejak \d\d\.\d\d WIB"))
    await expect(banner).to_contain_text("mencoba lagi dalam")
    assert await page.locator("#tiles").inner_text() == before  # the last data stays
    assert await tile_state(page, "cibitung") == "area"
    await page.screenshot(path=str(tmp_path / "wall-disconnected.png"))
    print(f"screenshot: {tmp_path / 'wall-disconnected.png'}")
    count = await rendered(page)

    stack.pantau.start()
    stack.pantau.wait_ready()
    # Back within the longest backoff (10 s at this refresh), with nobody touching the page.
    await expect(banner).to_be_hidden(timeout=15_000)
    await rendered(page, count)
    assert await tile_state(page, "cibitung") == "area"
    assert wall.outside == []


async def test_a_new_page_version_reloads_the_page_once(stack: Stack, browser: Browser) -> None:
    """After an upgrade the data says another version: the page reloads itself (once a minute
    at most, so a stale proxy cannot make it loop)."""
    token = (await stack.token("Dinding 4")).token
    wall = await open_wall(browser, f"{stack.url}/wall#token={token}")
    page = wall.page
    await rendered(page)
    await page.add_init_script(
        "sessionStorage.setItem('loads', String(Number(sessionStorage.getItem('loads') || 0) + 1))"
    )

    async def newer(route: Route) -> None:
        answer = await route.fetch()
        body = json.loads(await answer.text())
        body["version"] = "a-newer-one"
        await route.fulfill(response=answer, body=json.dumps(body))

    async with page.expect_event("load", timeout=(REFRESH_SECONDS + 10) * 1000):
        await page.route("**/api/v1/wall*", newer)
    count = await rendered(page)  # the reloaded page signs in from storage and draws the data
    await rendered(page, count + 1)  # two more refreshes of the other version: no reload
    assert await page.evaluate("sessionStorage.getItem('loads')") == "1"
    assert page.url == f"{stack.url}/wall"


async def test_a_revoked_link_says_so_on_the_screen(stack: Stack, browser: Browser) -> None:
    created = await stack.token("Dinding lama")
    wall = await open_wall(browser, f"{stack.url}/wall#token={created.token}")
    page = wall.page
    await rendered(page)
    async with await psycopg.AsyncConnection.connect(stack.db, autocommit=True) as conn:
        assert await auth.revoke_token(conn, created.id, "test")
    notice = page.locator("#notice")
    await expect(notice).to_be_visible(timeout=(REFRESH_SECONDS + 5) * 1000)
    await expect(notice).to_contain_text("tidak berlaku lagi")
    await expect(notice).to_contain_text("pantau token create --role operator")
    await expect(page.locator(".tile")).to_have_count(0)  # no data for a revoked token
    assert await page.evaluate("localStorage.getItem('pantau-wall-token')") is None

    # A wall PC without a link: how to get one, and no request for data at all.
    fresh = await open_wall(browser, f"{stack.url}/wall")
    await expect(fresh.page.locator("#notice")).to_contain_text("belum masuk")
    assert wall.outside == []
    assert fresh.outside == []
