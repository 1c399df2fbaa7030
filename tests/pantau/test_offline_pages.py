"""Offline for real (issue 8.7): every HTML page Pantau serves loads in headless Chromium without
one request leaving 127.0.0.1. The pages are found from the app's own routes (every GET route
without path parameters whose answer is HTML), so a new page is covered without editing this."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from urllib.parse import urlparse

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from playwright.async_api import Browser, Route, async_playwright

from pantau import service
from pantau.settings import Settings
from tests.devices.test_phone_page import ARGS, CHROMIUM
from tests.pantau.test_service import wait_ready

# What each known page shows once it has rendered (then it has asked for everything it needs);
# other pages are judged once the network is idle.
RENDERED = {
    "/docs": ".swagger-ui .info",
    "/redoc": "text=API docs by Redocly",
    "/m/": "body",
}
LOCAL_SCHEMES = ("data", "blob", "about", "chrome-error")


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[tuple[str, FastAPI]]:
    stop = asyncio.Event()
    started: asyncio.Future[service.Started] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(service.run(settings, stop=stop, on_started=started.set_result))
    done, _ = await asyncio.wait({task, started}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    try:
        info = started.result()
        assert info.app is not None
        async with httpx.AsyncClient(base_url=info.http_url) as http:
            await wait_ready(http)
        yield info.http_url, info.app
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not shutil.which("chromium"):
        pytest.fail("headless Chromium is missing: install the Debian package chromium")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        await browser.close()


async def html_pages(url: str, app: FastAPI) -> list[str]:
    """Paths of the GET routes without path parameters that answer with HTML."""
    # iter_route_contexts also walks the routers included by the domains (FastAPI >= 0.16x keeps
    # them as included routers, not copies in app.routes).
    paths = sorted(
        {
            route.path
            for route in iter_route_contexts(app.routes)
            if route.path and "GET" in (route.methods or ()) and "{" not in route.path
        }
    )
    pages = []
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        for path in paths:
            response = await http.get(path)
            if response.headers.get("content-type", "").startswith("text/html"):
                pages.append(path)
    return pages


async def test_every_page_loads_without_the_internet(
    served: tuple[str, FastAPI], browser: Browser
) -> None:
    url, app = served
    pages = await html_pages(url, app)
    assert {"/docs", "/redoc", "/m/"} <= set(pages), pages
    context = await browser.new_context()
    outside: list[str] = []
    loaded: dict[str, int] = {}

    async def guard(route: Route) -> None:
        target = urlparse(route.request.url)
        if target.scheme in LOCAL_SCHEMES or target.hostname == "127.0.0.1":
            await route.continue_()
        else:
            outside.append(f"{route.request.frame.url} -> {route.request.url}")
            await route.abort()  # the machine is offline anyway; fail fast instead of hanging

    await context.route("**/*", guard)
    try:
        for path in pages:
            page = await context.new_page()
            requests: list[str] = []
            page.on("request", lambda request, seen=requests: seen.append(request.url))
            response = await page.goto(url + path, wait_until="networkidle")
            assert response is not None
            assert response.status == 200, path
            await page.wait_for_selector(RENDERED.get(path, "body"), state="attached")
            await page.wait_for_load_state("networkidle")
            loaded[path] = len(requests)
            await page.close()
    finally:
        await context.close()
    assert outside == []
    assert loaded["/redoc"] >= 3  # the page, its script, the OpenAPI document: it really ran
