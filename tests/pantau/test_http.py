import asyncio
import re
import socket

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from pantau.errors import ConfigError
from pantau.health import Readiness
from pantau.http import bind, build_app
from pantau.settings import HttpSettings


def client(readiness: Readiness, registry: CollectorRegistry | None = None) -> httpx.AsyncClient:
    app = build_app(registry or CollectorRegistry(), readiness)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://pantau")


async def test_healthz_answers_even_when_not_ready() -> None:
    readiness = Readiness()

    async def down() -> str:
        return "unreachable"

    readiness.add("database", down)
    async with client(readiness) as http:
        assert (await http.get("/healthz")).json() == {"status": "alive"}
        response = await http.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "not ready", "checks": {"database": "unreachable"}}


async def test_readyz_reports_every_check_and_times_out_slow_ones() -> None:
    readiness = Readiness(timeout_seconds=0.1)

    async def ok() -> None:
        return None

    async def hung() -> None:
        await asyncio.sleep(10)

    readiness.add("database", ok)
    readiness.add("broker", hung)
    async with client(readiness) as http:
        response = await http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "broker": "no answer within 0.1s"}


async def test_readyz_ready_when_all_ok() -> None:
    readiness = Readiness()

    async def ok() -> None:
        return None

    readiness.add("database", ok)
    async with client(readiness) as http:
        response = await http.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


async def test_metrics_exposes_the_given_registry() -> None:
    registry = CollectorRegistry()
    Counter("pantau_test_events", "a test counter", registry=registry).inc(3)
    async with client(Readiness(), registry) as http:
        response = await http.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert "pantau_test_events_total 3.0" in response.text


async def test_openapi_and_docs_work_offline() -> None:
    async with client(Readiness()) as http:
        spec = (await http.get("/openapi.json")).json()
        docs = await http.get("/docs")
        assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
        assert assets
        for asset in assets:
            assert asset.startswith("/"), f"/docs loads {asset} from elsewhere"
            assert (await http.get(asset)).status_code == 200, asset
    assert {"/healthz", "/readyz", "/metrics"} <= set(spec["paths"])
    assert docs.status_code == 200
    assert "cdn" not in docs.text


def test_readiness_names_are_unique() -> None:
    readiness = Readiness()

    async def ok() -> None:
        return None

    readiness.add("database", ok)
    with pytest.raises(ValueError, match="twice"):
        readiness.add("database", ok)


def test_taken_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"http.port = {port} on 127.0.0.1 cannot be used"):
            bind(HttpSettings(host="127.0.0.1", port=port))
