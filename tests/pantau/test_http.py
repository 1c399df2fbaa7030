import asyncio
import re
import socket

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel

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


JSON = {"content-type": "application/json"}


def echo_app(max_body_bytes: int) -> httpx.AsyncClient:
    """An app with one route that reads its whole body, behind the body limit."""
    from fastapi import APIRouter, Request

    router = APIRouter()

    @router.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    class Doc(BaseModel):
        text: str

    @router.post("/doc")
    async def doc(body: Doc) -> dict[str, int]:  # FastAPI reads and parses the body itself
        return {"chars": len(body.text)}

    app = build_app(CollectorRegistry(), Readiness(), [router], max_body_bytes=max_body_bytes)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://pantau")


async def test_body_limit_from_content_length_and_while_streaming() -> None:
    sent = 0

    async def chunks(total: int):  # type: ignore[no-untyped-def]
        nonlocal sent
        for _ in range(total // 1000):
            sent += 1000
            yield b"x" * 1000

    async with echo_app(10_000) as http:
        assert (await http.post("/echo", content=b"x" * 10_000)).json() == {"bytes": 10_000}
        refused = await http.post("/echo", content=b"x" * 10_001)
        assert refused.status_code == 413
        assert refused.json() == {
            "detail": "request body of 10001 bytes is over the limit of 10000 bytes "
            "(http.max_body_bytes); expected a smaller body: split the upload",
            "problems": [],
        }
        streamed = await http.post("/echo", content=chunks(9_000))
        assert streamed.json() == {"bytes": 9_000}
        sent = 0
        streamed = await http.post("/echo", content=chunks(1_000_000))
        assert streamed.status_code == 413
        assert "over the limit of 10000 bytes (http.max_body_bytes)" in streamed.json()["detail"]
        # Reading stopped at the chunk that passed the limit, not at the end of the body.
        assert sent <= 12_000
        # A body FastAPI parses itself is refused the same way, from Content-Length or chunked
        # (not turned into FastAPI's 400 "error parsing the body").
        refused = await http.post("/doc", json={"text": "y" * 20_000})
        assert refused.status_code == 413

        async def json_chunks(n: int):  # type: ignore[no-untyped-def]
            yield b'{"text": "'
            for _ in range(n):
                yield b"y" * 1000
            yield b'"}'

        ok = await http.post("/doc", content=json_chunks(5), headers=JSON)
        assert ok.json() == {"chars": 5_000}
        refused = await http.post("/doc", content=json_chunks(50), headers=JSON)
        assert refused.status_code == 413
        assert "(http.max_body_bytes)" in refused.json()["detail"]
