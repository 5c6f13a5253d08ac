"""The panel served against the real server, and an agent at it over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from backchannel.rp import ClientSecretBasic
from backchannel.settings import Settings
from tests.conftest import RegisteredClient
from tests.support.call_centre import Desk, running_panel
from tests.support.served import ServedApp, serve_over_hypercorn


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[ServedApp]:
    async with serve_over_hypercorn(settings) as served:
        yield served


@pytest.fixture
async def call_centre_client(make_client: Any) -> RegisteredClient:
    """The panel's registration: poll mode, client_secret_basic."""
    registered: RegisteredClient = await make_client(name="Example Bank support")
    return registered


@pytest.fixture
def panel_options() -> dict[str, Any]:
    """PanelConfig fields a test module or test changes."""
    return {}


@pytest.fixture
async def panel(
    server: ServedApp, call_centre_client: RegisteredClient, panel_options: dict[str, Any]
) -> AsyncIterator[str]:
    assert call_centre_client.secret is not None
    auth = ClientSecretBasic(call_centre_client.client_id, call_centre_client.secret)
    async with running_panel(server.url, auth, **panel_options) as url:
        yield url


@pytest.fixture
async def visitor(panel: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like HTTP client at the panel that has not logged in."""
    async with httpx.AsyncClient(base_url=panel, timeout=20) as http:
        yield http


@pytest.fixture
async def desk(visitor: httpx.AsyncClient) -> Desk:
    """Agent 42, logged in."""
    agent = Desk(visitor)
    assert (await agent.log_in()).status_code == 303
    return agent
