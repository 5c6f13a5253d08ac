"""The client's notification receiver, fed by the real server's ping and push deliveries."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from backchannel.db.users import User
from backchannel.rp import (
    AccessDenied,
    CibaClient,
    Notification,
    PingNotification,
    PushedError,
    PushedTokens,
    ReportedNotMe,
    aiohttp_notification_handler,
)
from backchannel.settings import Settings
from tests.rp.conftest import MakeClient, basic
from tests.support.ciba import decide
from tests.support.receiver import free_port


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The receiver listens on loopback, which the server refuses unless told otherwise.
    return settings.replace(allow_insecure_urls=True)


class Endpoint:
    """A relying party's notification endpoint: the rp handler on a loopback port."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.inbox: asyncio.Queue[Notification] = asyncio.Queue()
        self.client: CibaClient | None = None
        self.url = ""

    async def _route(self, request: web.Request) -> web.StreamResponse:
        assert self.client is not None
        handler = aiohttp_notification_handler(
            self.client,
            self.inbox.put,
            mode=self.mode,  # type: ignore[arg-type]
        )
        return await handler(request)

    async def next(self) -> Notification:
        return await asyncio.wait_for(self.inbox.get(), 15)


@contextlib.asynccontextmanager
async def notification_endpoint(mode: str) -> AsyncIterator[Endpoint]:
    endpoint = Endpoint(mode)
    app = web.Application()
    app.router.add_post("/notify", endpoint._route)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    endpoint.url = f"http://127.0.0.1:{port}/notify"
    try:
        yield endpoint
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("mode", ["ping", "push"])
async def test_the_receiver_takes_the_servers_notification_and_the_client_gets_its_tokens(
    mode: str,
    make_rp_client: MakeClient,
    make_client: Any,
    db: asyncpg.Connection,
    alice: User,
) -> None:
    async with notification_endpoint(mode) as endpoint:
        registered = await make_client(
            backchannel_token_delivery_mode=mode,
            backchannel_client_notification_endpoint=endpoint.url,
        )
        client = endpoint.client = await make_rp_client(basic(registered))
        started = await client.start(
            login_hint="alice@example.com",
            scope="openid email",
            client_notification_token=secrets.token_urlsafe(24),
        )
        await decide(db, started.auth_req_id, "approved")
        notification = await endpoint.next()
        assert notification.auth_req_id == started.auth_req_id
        if mode == "ping":
            assert isinstance(notification, PingNotification)
            tokens = await client.wait(started.auth_req_id)
        else:
            assert isinstance(notification, PushedTokens)
            tokens = notification.tokens
        assert tokens.id_token_claims is not None
        assert tokens.id_token_claims["sub"] == "alice"
        assert (await client.userinfo(tokens.access_token))["sub"] == "alice"


async def test_a_pushed_denial_reaches_the_receiver_as_access_denied(
    make_rp_client: MakeClient, make_client: Any, db: asyncpg.Connection, alice: User
) -> None:
    async with notification_endpoint("push") as endpoint:
        registered = await make_client(
            backchannel_token_delivery_mode="push",
            backchannel_client_notification_endpoint=endpoint.url,
        )
        client = endpoint.client = await make_rp_client(basic(registered))
        started = await client.start(login_hint="alice@example.com", client_notification_token="t")
        await decide(db, started.auth_req_id, "denied")
        notification = await endpoint.next()
        assert isinstance(notification, PushedError)
        assert type(notification.error) is AccessDenied


async def test_a_pushed_not_me_report_reaches_the_receiver_as_reported_not_me(
    make_rp_client: MakeClient, make_client: Any, db: asyncpg.Connection, alice: User
) -> None:
    async with notification_endpoint("push") as endpoint:
        registered = await make_client(
            backchannel_token_delivery_mode="push",
            backchannel_client_notification_endpoint=endpoint.url,
        )
        client = endpoint.client = await make_rp_client(basic(registered))
        started = await client.start(login_hint="alice@example.com", client_notification_token="t")
        await decide(db, started.auth_req_id, "denied", reason="not_me")
        notification = await endpoint.next()
        assert isinstance(notification, PushedError)
        assert isinstance(notification.error, ReportedNotMe)
