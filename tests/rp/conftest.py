"""The real server on a hypercorn port, and ``backchannel.rp`` clients talking to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest

from backchannel.rp import CibaClient, ClientAuth, ClientSecretBasic
from backchannel.settings import Settings
from tests.conftest import RegisteredClient
from tests.support.relying_party import FakeClock, RequestLog, ServerTime
from tests.support.served import ServedApp, serve_over_hypercorn

MakeClient = Callable[..., Awaitable[CibaClient]]
NewClient = Callable[..., Awaitable[CibaClient]]


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[ServedApp]:
    async with serve_over_hypercorn(settings) as served:
        yield served


@pytest.fixture
def requests_sent() -> RequestLog:
    return RequestLog()


@pytest.fixture
async def session(requests_sent: RequestLog) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(trace_configs=[requests_sent.trace_config()]) as session:
        yield session


@pytest.fixture
def server_time(db: asyncpg.Connection) -> ServerTime:
    return ServerTime(db=db)


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def new_client(session: aiohttp.ClientSession) -> AsyncIterator[NewClient]:
    """``await new_client(issuer, auth, **options)``: a CibaClient on the traced session."""
    clients: list[CibaClient] = []

    async def new(issuer: str, auth: ClientAuth, **options: Any) -> CibaClient:
        client = CibaClient(issuer, auth, session=session, **options)
        clients.append(client)
        return client

    yield new
    for client in clients:
        await client.close()


@pytest.fixture
def make_rp_client(server: ServedApp, new_client: NewClient) -> MakeClient:
    """``await make_rp_client(auth, **options)``: a CibaClient for the real server."""

    async def make(auth: ClientAuth, **options: Any) -> CibaClient:
        return await new_client(server.url, auth, **options)

    return make


def basic(registered: RegisteredClient) -> ClientSecretBasic:
    assert registered.secret is not None
    return ClientSecretBasic(registered.client_id, registered.secret)


@pytest.fixture
async def client(make_rp_client: MakeClient, rp: RegisteredClient) -> CibaClient:
    """The poll-mode ``rp`` with client_secret_basic, on the real server."""
    return await make_rp_client(basic(rp))
