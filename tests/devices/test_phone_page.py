"""The phone page in real headless Chromium (Debian `chromium`, driven by Playwright) at a
360 px wide phone size: sign in, register with the phone's GPS, see the credentials, snippet and
QR code, then the live check turning when the device really publishes."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlparse

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from playwright.async_api import Browser, Page, async_playwright, expect

from pantau.embedded import MosquittoBroker
from tests.devices.conftest import Api

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


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not shutil.which("chromium"):
        pytest.fail("headless Chromium is missing: install the Debian package chromium")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        await browser.close()


async def phone(browser: Browser, url: str) -> tuple[Page, list[str]]:
    context = await browser.new_context(
        viewport={"width": 360, "height": 740},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        locale="id-ID",
        timezone_id="Asia/Jakarta",
        geolocation={"latitude": -6.35123, "longitude": 107.03456, "accuracy": 8},
        permissions=["geolocation"],
    )
    page = await context.new_page()
    hosts: list[str] = []
    page.on("request", lambda request: hosts.append(urlparse(request.url).hostname or ""))
    await page.goto(url + "/m/")
    return page, hosts


async def test_page_is_small_and_self_contained(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.url) as http:
        page = await http.get("/m/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert len(page.content) < 150 * 1024
    assert "http://" not in page.text
    assert "https://" not in page.text  # no CDN, no fonts, nothing from outside


async def test_register_on_a_phone_and_see_the_first_reading(
    browser: Browser, dynsec_api: Api, dynsec_broker: MosquittoBroker
) -> None:
    page, hosts = await phone(browser, dynsec_api.url)
    await page.fill("#token", "pt_wrong")
    await page.click("#signin-btn")
    await expect(page.locator("#signin-err")).to_have_text(
        "Token tidak dikenal atau sudah dicabut."
    )

    await page.fill("#token", dynsec_api.tokens["technician"])
    await page.click("#signin-btn")
    await expect(page.locator("#register")).to_be_visible()
    await page.fill("#f-device_id", "wl-setu-09")
    await page.fill("#f-name", "Pos pantau Kali CBL")
    await page.select_option("#f-device_type", label="Tinggi muka air")
    await page.select_option("#f-kecamatan", label="Setu")
    await page.click("#gps")
    await expect(page.locator("#f-latitude")).to_have_value("-6.351230")
    await expect(page.locator("#f-longitude")).to_have_value("107.034560")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the form is {width}px wide: it scrolls sideways on a phone"
    await page.click("#submit")

    await expect(page.locator("#r-id")).to_have_text("wl-setu-09")
    password = await page.locator("#r-password").inner_text()
    assert len(password) >= 20
    snippet = await page.locator("#r-snippet").inner_text()
    assert f"MQTT_PASSWORD={password}" in snippet
    assert "MQTT_TOPIC=bekasi-json/setu/wl-setu-09" in snippet
    assert await page.locator("#r-qr svg").count() == 1
    await expect(page.locator("#live-text")).to_have_text("Menunggu data pertama…")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 360

    # The technician powers the device on: it publishes with the credentials it was given.
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"wl-{uuid.uuid4().hex[:6]}")
    client.username_pw_set("wl-setu-09", password)
    client.connect("127.0.0.1", dynsec_broker.port)
    client.loop_start()
    payload = orjson.dumps({"ts": int(time.time() * 1000), "readings": {"water_level_cm": 143.5}})
    client.publish("bekasi-json/setu/wl-setu-09", payload, qos=1).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()

    await expect(page.locator("#live-text")).to_have_text("Data diterima", timeout=20000)
    await expect(page.locator("#values")).to_contain_text("water_level_cm")
    await expect(page.locator("#values")).to_contain_text("143.5")
    assert set(hosts) == {"127.0.0.1"}, f"the page reached out to {set(hosts)}"


async def test_form_errors_are_shown_by_the_fields(browser: Browser, api: Api) -> None:
    page, _ = await phone(browser, api.url)
    await page.fill("#token", api.tokens["technician"])
    await page.click("#signin-btn")
    await expect(page.locator("#register")).to_be_visible()
    await page.fill("#f-device_id", "wl-jakarta-01")
    await page.fill("#f-name", "Salah tempat")
    await page.select_option("#f-device_type", label="Tinggi muka air")
    await page.select_option("#f-kecamatan", label="Setu")
    await page.fill("#f-latitude", "-6,2")  # a decimal comma, as typed on an Indonesian phone
    await page.fill("#f-longitude", "106.8")
    await page.click("#submit")
    await expect(page.locator('.err[data-for="latitude"]')).to_contain_text(
        "outside Kabupaten Bekasi"
    )
    await expect(page.locator("#register")).to_be_visible()


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
