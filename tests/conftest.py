"""Shared fixtures: a real PostgreSQL, a fresh database per test, the app and an HTTP client."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette

from backchannel.app import create_app
from backchannel.db.clients import Client
from backchannel.db.pool import connect
from backchannel.db.users import User
from backchannel.oauth.services import Services
from backchannel.settings import Settings
from tests.support import factories
from tests.support.cli import Cli, cli_runner
from tests.support.postgres import TestPostgres, start_test_postgres
from tests.support.receiver import NotificationReceiver, run_receiver

ISSUER = "http://127.0.0.1:8000"


@pytest.fixture(scope="session")
def test_postgres() -> Iterator[TestPostgres]:
    yield from start_test_postgres()


@pytest.fixture
async def database_url(test_postgres: TestPostgres) -> AsyncIterator[str]:
    dsn = await test_postgres.create_database()
    yield dsn
    await test_postgres.drop_database(dsn)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        issuer=ISSUER,
        database_url=database_url,
        db_pool_min=1,
        db_pool_max=10,
        # The push service the tests' phones subscribe with (tests/support/device.py).
        push_allowed_hosts=(*Settings().push_allowed_hosts, "push.example.net"),
    )


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the test database, for arranging and inspecting rows."""
    conn = await connect(database_url)
    yield conn
    await conn.close()


@dataclass
class RunningApp:
    app: Starlette
    http: httpx.AsyncClient

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services


async def start_app(settings: Settings) -> AsyncIterator[RunningApp]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=settings.issuer) as http:
            yield RunningApp(app, http)


@pytest.fixture
async def running(settings: Settings) -> AsyncIterator[RunningApp]:
    async for running_app in start_app(settings):
        yield running_app


@pytest.fixture
def http(running: RunningApp) -> httpx.AsyncClient:
    return running.http


@pytest.fixture
def services(running: RunningApp) -> Services:
    return running.services


@dataclass
class RegisteredClient:
    client: Client
    secret: str | None

    @property
    def client_id(self) -> str:
        return self.client.client_id

    def basic_auth(self) -> dict[str, str]:
        assert self.secret is not None
        raw = f"{self.client.client_id}:{self.secret}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


@pytest.fixture
def make_client(db: asyncpg.Connection) -> Any:
    async def make(**overrides: Any) -> RegisteredClient:
        client, secret = await factories.create_client(db, **overrides)
        return RegisteredClient(client, secret)

    return make


@pytest.fixture
async def rp(make_client: Any) -> RegisteredClient:
    """A poll-mode relying party authenticating with client_secret_basic."""
    registered: RegisteredClient = await make_client()
    return registered


@pytest.fixture
async def alice(db: asyncpg.Connection) -> User:
    return await factories.create_user(
        db,
        subject="alice",
        email="alice@example.com",
        phone="+447700900123",
        account="12345678",
        username="alice",
        display_name="Alice Example",
    )


@pytest.fixture
def cli(
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> Cli:
    """Runs ``backchannel`` commands against the test database."""
    return cli_runner(database_url, monkeypatch, tmp_path / "data", capsys)


@pytest.fixture
async def receiver() -> AsyncIterator[NotificationReceiver]:
    """A ping and push notification endpoint on loopback, recording what it is sent."""
    async for started in run_receiver():
        yield started
