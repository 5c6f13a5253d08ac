"""The client's HTTP session: made and closed by ``async with``, or borrowed and left open."""

from __future__ import annotations

import aiohttp
import pytest

from backchannel.rp import CibaClient, UsageError
from tests.conftest import RegisteredClient
from tests.rp.conftest import basic
from tests.support.served import ServedApp

pytestmark = pytest.mark.usefixtures("alice")


async def test_client_makes_its_own_session_and_closes_it_on_leaving_the_block(
    server: ServedApp, rp: RegisteredClient
) -> None:
    async with CibaClient(server.url, basic(rp)) as client:
        started = await client.start(login_hint="alice@example.com")
        assert started.auth_req_id
    with pytest.raises(UsageError, match="closed"):
        await client.start(login_hint="alice@example.com")


async def test_borrowed_session_is_left_open(
    server: ServedApp, rp: RegisteredClient, session: aiohttp.ClientSession
) -> None:
    async with CibaClient(server.url, basic(rp), session=session) as client:
        await client.discover()
    assert not session.closed
