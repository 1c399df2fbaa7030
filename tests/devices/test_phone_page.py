"""The phone page in real headless Chromium (Debian `chromium`, driven by Playwright) at a
360 px wide phone size: sign in (typing the token, or opening the sign-in link of `pantau token
create --qr`), register with the phone's GPS, see the credentials, snippet and QR code, then the
live check turning when the device really publishes (with the snippet's own `mosquitto_pub` line).

Screenshots of each step are saved in the test's temp dir (the path is printed): look at them as
a technician in the sun would."""

from __future__ import annotations

import asyncio
import re
import shlex
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from devices.credentials import PASSWORD_ALPHABET
from pantau.embedded import MosquittoBroker
from pantau.settings import Settings
from tests.devices.conftest import Api, api_for
from tests.fixtures.rtsp import CREDENTIALS, RtspServer
from tests.fixtures.servers import run_pantau

CHROMIUM = "/usr/bin/chromium"
# As the machine's own probe starts it: no sandbox as root, and no background connections to
# the internet, which this machine does not reach.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Counts the input events the page really receives, to check the test's own tally.
COUNTER = """
window.__keys = 0; window.__taps = 0;
addEventListener("keydown", () => { window.__keys++; }, true);
addEventListener("pointerdown", () => { window.__taps++; }, true);
"""
ENGLISH = ("Host", "Username", "Password", "Latitude", "Longitude", "water_level_cm", "Error")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not shutil.which("chromium"):
        pytest.fail("headless Chromium is missing: install the Debian package chromium")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        await browser.close()


async def phone(
    browser: Browser, url: str, *, gps: bool = True, path: str = "/m/"
) -> tuple[Page, list[str]]:
    context = await browser.new_context(
        viewport={"width": 360, "height": 740},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        locale="id-ID",
        timezone_id="Asia/Jakarta",
        geolocation={"latitude": -6.35123, "longitude": 107.03456, "accuracy": 8},
        permissions=["geolocation"] if gps else [],
    )
    page = await context.new_page()
    await page.add_init_script(COUNTER)
    hosts: list[str] = []
    # A blob: URL (a camera's picture, fetched with the token) is the page's own memory.
    page.on(
        "request",
        lambda request: (
            request.url.startswith("blob:") or hosts.append(urlparse(request.url).hostname or "")
        ),
    )
    await page.goto(url + path)
    return page, hosts


class Technician:
    """Drives the page as thumbs do, and counts: a tap per touch, a key per character typed, two
    taps per list choice (open the list, pick the item: Chromium's native picker cannot be
    tapped headless, so `select_option` stands in for those two taps)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.keys = 0
        self.taps = 0
        self.picks = 0
        self.outside = 0  # taps outside the page (the link in the camera app)

    async def tap(self, selector: str) -> None:
        await self.page.tap(selector)
        self.taps += 1

    async def type(self, selector: str, text: str) -> None:
        await self.tap(selector)
        await self.page.keyboard.type(text)
        self.keys += len(text)

    async def choose(self, selector: str, label: str) -> None:
        await self.page.select_option(selector, label=label)
        self.taps += 2
        self.picks += 1

    async def check_tally(self) -> None:
        """The page saw exactly the keys and taps counted here."""
        seen_keys = await self.page.evaluate("window.__keys")
        seen_taps = await self.page.evaluate("window.__taps")
        assert (seen_keys, seen_taps + 2 * self.picks + self.outside) == (self.keys, self.taps)


async def shot(page: Page, tmp_path: Path, name: str, *, full: bool = False) -> None:
    path = tmp_path / f"{name}.png"
    await page.screenshot(path=str(path), full_page=full)
    print(f"screenshot: {path}")


async def in_view(page: Page, selector: str) -> bool:
    box = await page.locator(selector).bounding_box()
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 740


async def register_water_level(who: Technician, name: str = "Pos pantau Kali CBL") -> None:
    """The form, as a technician fills it on site: type, kecamatan (the id is proposed), a name,
    the position from GPS, submit."""
    page = who.page
    await expect(page.locator("#register")).to_be_visible()
    await who.choose("#f-device_type", "Tinggi muka air")
    await who.choose("#f-kecamatan", "Setu")
    await expect(page.locator("#f-device_id")).to_have_value(re.compile(r"^wl-setu-\d\d$"))
    await who.type("#f-name", name)
    await who.tap("#gps")
    await expect(page.locator("#f-latitude")).to_have_value("-6.351230")
    await expect(page.locator("#f-longitude")).to_have_value("107.034560")
    await who.tap("#submit")
    await expect(page.locator("#r-id")).to_have_text(re.compile(r"^wl-setu-\d\d$"))


async def test_page_is_small_and_self_contained(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.url) as http:
        page = await http.get("/m/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert len(page.content) < 40 * 1024, f"the page grew to {len(page.content)} bytes"
    assert "http://" not in page.text
    assert "https://" not in page.text  # no CDN, no fonts, nothing from outside


async def test_register_on_a_phone_and_see_the_first_reading(
    browser: Browser, dynsec_api: Api, dynsec_broker: MosquittoBroker, tmp_path: Path
) -> None:
    page, hosts = await phone(browser, dynsec_api.url)
    await page.fill("#token", "pt_wrong")
    await page.click("#signin-btn")
    await expect(page.locator("#signin-err")).to_have_text(
        "Token tidak dikenal atau sudah dicabut."
    )
    await shot(page, tmp_path, "1-signin-error")

    await page.fill("#token", dynsec_api.tokens["technician"])
    await page.click("#signin-btn")
    await expect(page.locator("#register")).to_be_visible()
    await shot(page, tmp_path, "2-form", full=True)
    await register_water_level(Technician(page))
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the page is {width}px wide: it scrolls sideways on a phone"

    # The top of the result is what the technician sees first: registered, save the password.
    assert await page.evaluate("window.scrollY") == 0
    await expect(page.locator("#r-title")).to_contain_text("Terdaftar")
    assert await in_view(page, "#r-title")
    assert await in_view(page, "#r-once")
    await expect(page.locator("#r-once")).to_contain_text("Simpan kata sandi sekarang")
    await shot(page, tmp_path, "3-registered")
    device_id = await page.locator("#r-id").inner_text()

    password = await page.locator("#r-password").inner_text()
    groups = password.split("-")
    assert [len(g) for g in groups] == [4, 4, 4, 4, 4], password
    assert set("".join(groups)) <= set(PASSWORD_ALPHABET), password
    assert not set(password) & set("lI1O0o"), password
    creds = await page.locator("#r-creds").inner_text()
    assert "Kata sandi" in creds
    assert "Nama pengguna" in creds
    snippet = await page.locator("#r-snippet").inner_text()
    shown = (await page.locator("main").inner_text()).replace(snippet, "")
    assert not [w for w in ENGLISH if w in shown]

    assert f"MQTT_PASSWORD={password}" in snippet
    assert f"MQTT_TOPIC=bekasi-json/setu/{device_id}" in snippet
    assert '"water_level_cm":132.5' in snippet  # the type's example, not 0.0
    assert await page.locator("#r-qr svg").count() == 1
    await expect(page.locator("#live-text")).to_have_text("Menunggu data pertama…")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 360
    await shot(page, tmp_path, "4-result", full=True)

    # The technician powers the device on, or first tries the snippet's own test line from a
    # laptop: it is run as printed, only pointed at this test's broker.
    line = next(x for x in snippet.splitlines() if x.startswith("mosquitto_pub "))
    command = shlex.split(line)
    command[command.index("-h") + 1] = "127.0.0.1"
    command[command.index("-p") + 1] = str(dynsec_broker.port)
    sent = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=30, check=False
    )
    assert sent.returncode == 0, sent.stderr

    await expect(page.locator("#live-text")).to_have_text("Data diterima", timeout=20000)
    await expect(page.locator("#values")).to_contain_text("Tinggi muka air")
    await expect(page.locator("#values")).to_contain_text("132,5 cm")
    assert "water_level_cm" not in await page.locator("#values").inner_text()
    await page.locator("#check").scroll_into_view_if_needed()
    await shot(page, tmp_path, "5-live")
    assert set(hosts) == {"127.0.0.1"}, f"the page reached out to {set(hosts)}"


async def test_form_errors_are_in_indonesian_by_the_fields(
    browser: Browser, api: Api, tmp_path: Path
) -> None:
    page, _ = await phone(browser, api.url)
    await page.fill("#token", api.tokens["technician"])
    await page.click("#signin-btn")
    await expect(page.locator("#register")).to_be_visible()

    # Checked on the phone: nothing chosen, nothing typed.
    await page.click("#submit")
    await expect(page.locator('.err[data-for="device_type"]')).to_contain_text(
        "Pilih jenis perangkat"
    )
    await expect(page.locator('.err[data-for="name"]')).to_contain_text("Wajib diisi")
    assert await in_view(page, '.err[data-for="device_type"]')

    # Checked by the server: a position outside the regency, typed with a decimal comma.
    await page.fill("#f-device_id", "wl-jakarta-01")
    await page.fill("#f-name", "Salah tempat")
    await page.select_option("#f-device_type", label="Tinggi muka air")
    await page.select_option("#f-kecamatan", label="Setu")
    await page.fill("#f-latitude", "-6,2")
    await page.fill("#f-longitude", "106,8")
    await page.fill("#f-installed_by", "x" * 201)  # past the 200 characters allowed
    await page.click("#submit")
    await expect(page.locator('.err[data-for="installed_by"]')).to_contain_text(
        "Terlalu panjang (paling banyak 200 karakter)"
    )
    await expect(page.locator('.err[data-for="device_type"]')).to_be_empty()
    await page.fill("#f-installed_by", "Budi")
    await page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    await page.click("#submit")
    latitude = page.locator('.err[data-for="latitude"]')
    await expect(latitude).to_contain_text("di luar Kabupaten Bekasi")
    await expect(latitude).to_contain_text("lintang -6,45 s.d. -5,95")
    await expect(page.locator('.err[data-for="installed_by"]')).to_be_empty()
    assert await in_view(page, '.err[data-for="latitude"]'), "the first error is not in view"
    assert await page.evaluate("document.activeElement.id") == "f-latitude"
    text = await page.locator("#register").inner_text()
    assert "outside" not in text
    assert "rincian" not in text  # every message here has its Indonesian wording
    await shot(page, tmp_path, "errors")

    # Latitude and longitude swapped, as a GPS app that lists longitude first makes easy.
    await page.fill("#f-latitude", "107,03")
    await page.fill("#f-longitude", "-6,35")
    await page.click("#submit")
    await expect(latitude).to_contain_text("tampaknya tertukar")

    # The same id twice: the second is refused, by the id field.
    await page.fill("#f-latitude", "")
    await page.fill("#f-longitude", "")
    await page.fill("#f-installed_by", "")
    await page.click("#submit")
    await expect(page.locator("#result")).to_be_visible()
    await page.click("#again")
    await page.fill("#f-device_id", "wl-jakarta-01")
    await page.fill("#f-name", "Lagi")
    await page.select_option("#f-device_type", label="Tinggi muka air")
    await page.select_option("#f-kecamatan", label="Setu")
    await page.click("#submit")
    await expect(page.locator('.err[data-for="device_id"]')).to_have_text(
        "ID ini sudah terdaftar. Pakai ID lain."
    )
    await expect(page.locator("#register")).to_be_visible()


async def test_gps_refused_says_so_in_indonesian(browser: Browser, api: Api) -> None:
    page, _ = await phone(browser, api.url, gps=False)
    await page.fill("#token", api.tokens["technician"])
    await page.click("#signin-btn")
    await page.click("#gps")
    await expect(page.locator("#gps-note")).to_contain_text("Izin lokasi ditolak")
    await expect(page.locator("#gps-note")).to_contain_text("ketik posisinya")


async def test_operator_token_may_not_register(browser: Browser, api: Api) -> None:
    page, _ = await phone(browser, api.url)
    await page.fill("#token", api.tokens["operator"])
    await page.click("#signin-btn")
    await page.fill("#f-device_id", "wl-setu-01")
    await page.fill("#f-name", "X")
    await page.select_option("#f-device_type", label="Tinggi muka air")
    await page.select_option("#f-kecamatan", label="Setu")
    await page.click("#submit")
    await expect(page.locator("#form-err")).to_have_text(
        "Token ini tidak boleh mendaftarkan perangkat."
    )


async def test_sign_in_link_saves_typing(browser: Browser, api: Api, tmp_path: Path) -> None:
    """A whole registration, counted: signing in by typing the token, then with the link that
    `pantau token create --role technician --qr` prints (opened by scanning its QR code: one
    tap on the link the camera shows)."""
    # Before: the token is read off a message and typed.
    typed = (await api.token("technician", "Budi (mengetik)")).token
    page, _ = await phone(browser, api.url)
    before = Technician(page)
    await before.type("#token", typed)
    await before.tap("#signin-btn")
    await register_water_level(before)
    await before.check_tally()

    # After: the admin's command prints a link and its QR code; the phone opens the link.
    made = await asyncio.to_thread(
        run_pantau,
        "token",
        "create",
        "--role",
        "technician",
        "--name",
        "Budi (tautan)",
        "--qr",
        "--url",
        api.url + "/m/",
        db=api.db,
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    link = next(x for x in made.stdout.splitlines() if "#token=" in x).strip()
    assert link.startswith(api.url + "/m/#token=pt_")
    assert "▀" in made.stdout or "█" in made.stdout  # the QR code, drawn in the terminal
    page, hosts = await phone(browser, link, path="")
    after = Technician(page)
    after.taps += 1  # the tap on the scanned link
    after.outside += 1
    await expect(page.locator("#register")).to_be_visible()
    assert "#token" not in page.url, f"the token stayed in the address bar: {page.url}"
    assert link.split("#token=")[1] == await page.evaluate("localStorage.getItem('pantau-token')")
    await shot(page, tmp_path, "link-signed-in")
    await register_water_level(after)
    await after.check_tally()
    assert set(hosts) == {"127.0.0.1"}

    print(
        f"registration, keys typed / taps: typing the token {before.keys} / {before.taps}, "
        f"with the sign-in link {after.keys} / {after.taps}"
    )
    assert after.keys < before.keys - 40
    assert after.taps < before.taps

    # The phone stays signed in: the page opened again later needs no token.
    again = await page.context.new_page()
    await again.goto(api.url + "/m/")
    await expect(again.locator("#register")).to_be_visible()

    # A revoked link says so, in words a technician can act on.
    async with api.client("admin") as http:
        tokens = (await http.get("/api/v1/tokens")).json()
        mine = next(t for t in tokens if t["name"] == "Budi (tautan)")
        assert (await http.delete(f"/api/v1/tokens/{mine['id']}")).status_code == 204
    stale, _ = await phone(browser, link, path="")
    await expect(stale.locator("#signin-err")).to_contain_text("Tautan masuk ini tidak berlaku")


@pytest.fixture
async def camera_api(settings: Settings, tmp_path: Path) -> AsyncIterator[Api]:
    """A running Pantau whose camera probes start at once (no stagger)."""
    streams = settings.streams.model_copy(
        update={"stagger_seconds": 0.0, "snapshot_dir": tmp_path / "snapshots"}
    )
    async with api_for(settings.model_copy(update={"streams": streams})) as api:
        yield api


async def test_register_a_camera_and_see_its_picture(
    browser: Browser, camera_api: Api, rtsp_server: RtspServer, tmp_path: Path
) -> None:
    """A camera has no MQTT: the technician gives its RTSP URL (with the camera's password), and
    the live check shows the probe's verdict and the picture it took, never the password."""
    page, hosts = await phone(browser, camera_api.url)
    await page.fill("#token", camera_api.tokens["technician"])
    await page.click("#signin-btn")
    who = Technician(page)
    await expect(page.locator("#register")).to_be_visible()
    await who.choose("#f-device_type", "Kamera CCTV")
    await expect(page.locator("#f-rtsp_url")).to_be_visible()
    await expect(page.locator("#f-payload_format")).to_be_hidden()
    await who.choose("#f-kecamatan", "Setu")
    await expect(page.locator("#f-device_id")).to_have_value(re.compile(r"^cam-setu-\d\d$"))
    await who.type("#f-name", "Simpang Setu")
    await who.tap("#gps")
    await expect(page.locator("#f-latitude")).to_have_value("-6.351230")

    await who.type("#f-rtsp_url", "kamera-setu")  # not an address: said here, nothing sent
    await who.tap("#submit")
    await expect(page.locator('.err[data-for="rtsp_url"]')).to_contain_text("rtsp://")
    await shot(page, tmp_path, "camera-1-bad-url")

    password = CREDENTIALS.split(":")[1]
    await page.fill("#f-rtsp_url", rtsp_server.url("secure", CREDENTIALS))
    await who.tap("#submit")
    await expect(page.locator("#r-id")).to_have_text(re.compile(r"^cam-setu-\d\d$"))
    await expect(page.locator("#r-config")).to_be_hidden()
    await expect(page.locator("#r-creds")).to_contain_text("rtsp://***@127.0.0.1")
    await expect(page.locator("#live-text")).to_have_text("Gambar diterima, normal", timeout=40000)
    await expect(page.locator("#snap")).to_be_visible(timeout=10000)
    assert await page.evaluate("document.getElementById('snap').naturalWidth") > 0
    assert password not in await page.locator("main").inner_text()
    assert await page.evaluate("document.documentElement.scrollWidth") <= 360
    await shot(page, tmp_path, "camera-2-live", full=True)
    assert set(hosts) == {"127.0.0.1"}, f"the page reached out to {set(hosts)}"
