"""A running Pantau with tokens of each role, for the registry's API tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import psycopg
import pytest
from pydantic import SecretStr

from pantau import auth
from pantau.embedded import MosquittoBroker
from pantau.settings import Settings
from tests.fixtures.servers import DYNSEC_ADMIN
from tests.pantau.test_service import running, wait_ready


@dataclass
class Api:
    url: str
    db: str
    tokens: dict[str, str]

    def client(self, role: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10)

    async def token(self, role: str, name: str) -> auth.CreatedToken:
        async with await psycopg.AsyncConnection.connect(self.db, autocommit=True) as conn:
            return await auth.create_token(conn, name, role, "test")


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with api_for(settings) as api:
        yield api


@asynccontextmanager
async def api_for(settings: Settings) -> AsyncIterator[Api]:
    """A running Pantau on these settings, with a token of each role."""
    async with running(settings) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            await wait_ready(http)
        tokens = {}
        async with await psycopg.AsyncConnection.connect(
            settings.database.url, autocommit=True
        ) as conn:
            for role in auth.ROLES:
                tokens[role] = (
                    await auth.create_token(conn, f"{role} for tests", role, "test")
                ).token
        yield Api(url, settings.database.url, tokens)


Make = Callable[..., Awaitable[httpx.Response]]


@pytest.fixture
async def dynsec_api(settings: Settings, dynsec_broker: MosquittoBroker) -> AsyncIterator[Api]:
    """A running Pantau issuing device credentials from a broker with dynamic security."""
    mqtt_settings = settings.mqtt.model_copy(
        update={
            "port": dynsec_broker.port,
            "username": DYNSEC_ADMIN[0],
            "dynsec": True,
            "password": SecretStr(DYNSEC_ADMIN[1]),
            "device_host": "mqtt.bekasikab.example",
        }
    )
    settings = settings.model_copy(update={"mqtt": mqtt_settings})
    async with running(settings) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            await wait_ready(http)
        async with await psycopg.AsyncConnection.connect(
            settings.database.url, autocommit=True
        ) as conn:
            token = (await auth.create_token(conn, "teknisi", "technician", "test")).token
        yield Api(url, settings.database.url, {"technician": token})
