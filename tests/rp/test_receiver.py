"""The notification receiver (CIBA §10.2 ping, §10.3 push), as a Starlette endpoint and as an
aiohttp handler, posted to directly. Pushed tokens are real ones from the real server."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg
import httpx
import pytest
from aiohttp import web
from starlette.applications import Starlette
from starlette.routing import Route

from backchannel.rp import (
    AccessDenied,
    AuthenticationStarted,
    CibaClient,
    ClientSecretBasic,
    Notification,
    PingNotification,
    PushedError,
    PushedTokens,
    TransactionFailed,
    aiohttp_notification_handler,
    starlette_notification_endpoint,
)
from tests.conftest import RegisteredClient
from tests.rp.conftest import NewClient
from tests.support.ciba import decide, poll
from tests.support.served import ServedApp
from tests.support.stand_in_issuer import run_stand_in_issuer

BOTH = pytest.mark.parametrize("framework", ["starlette", "aiohttp"])


@dataclass
class Receiver:
    """A notification endpoint under test and what its callback was handed."""

    http: httpx.AsyncClient
    url: str
    received: list[Notification] = field(default_factory=list)

    async def post(self, body: Any, bearer: str | None = None, **headers: str) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        headers["Content-Type"] = "application/json"
        return await self.http.post(self.url, content=content, headers=headers)


@contextlib.asynccontextmanager
async def _starlette(endpoint: Any) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    app = Starlette(routes=[Route("/ciba-notify", endpoint, methods=["POST"])])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://rp.test") as http:
        yield http, "/ciba-notify"


@contextlib.asynccontextmanager
async def _aiohttp(handler: Any) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    app = web.Application()
    app.router.add_post("/ciba-notify", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with httpx.AsyncClient() as http:
            yield http, f"http://{host}:{port}/ciba-notify"
    finally:
        await runner.cleanup()


ReceiverFor = Callable[..., contextlib.AbstractAsyncContextManager[Receiver]]


@pytest.fixture
def framework() -> str:
    return "starlette"


@pytest.fixture
def receiver_for(framework: str) -> ReceiverFor:
    """``async with receiver_for(client, mode, **options) as receiver``."""

    @contextlib.asynccontextmanager
    async def make(
        client: CibaClient, mode: Literal["ping", "push"], **options: Any
    ) -> AsyncIterator[Receiver]:
        received: list[Notification] = []

        async def callback(notification: Notification) -> None:
            received.append(notification)

        if framework == "starlette":
            serving = _starlette(
                starlette_notification_endpoint(client, callback, mode=mode, **options)
            )
        else:
            serving = _aiohttp(aiohttp_notification_handler(client, callback, mode=mode, **options))
        async with serving as (http, url):
            yield Receiver(http, url, received)

    return make


@pytest.fixture
async def offline_client(new_client: NewClient) -> CibaClient:
    """A client that never reaches a provider: enough where nothing needs verifying."""
    return await new_client("http://127.0.0.1:9", ClientSecretBasic("rp-1", "secret"))


def lookup_in(store: dict[str, str]) -> Callable[[str], Awaitable[str | None]]:
    """A ``token_lookup`` reading where a relying party keeps its notification tokens."""

    async def lookup(auth_req_id: str) -> str | None:
        return store.get(auth_req_id)

    return lookup


async def _start(client: CibaClient, token: str) -> AuthenticationStarted:
    return await client.start(login_hint="alice@example.com", client_notification_token=token)


@BOTH
@pytest.mark.usefixtures("alice")
async def test_ping_with_the_bearer_sent_for_that_request_reaches_the_callback(
    client: CibaClient, receiver_for: ReceiverFor
) -> None:
    started = await _start(client, "ping-token-1")
    async with receiver_for(client, "ping") as receiver:
        answer = await receiver.post({"auth_req_id": started.auth_req_id}, "ping-token-1")
    assert answer.status_code == 204
    assert receiver.received == [PingNotification(started.auth_req_id)]


@BOTH
@pytest.mark.usefixtures("alice")
async def test_wrong_missing_or_foreign_bearer_is_401_and_reaches_nobody(
    client: CibaClient, receiver_for: ReceiverFor
) -> None:
    started = await _start(client, "ping-token-1")
    other = await _start(client, "ping-token-2")
    body = {"auth_req_id": started.auth_req_id}
    async with receiver_for(client, "ping") as receiver:
        answers = [
            await receiver.post(body, "ping-token-x"),
            await receiver.post(body),
            await receiver.post(body, Authorization="Basic ping-token-1"),
            await receiver.post(body, "ping-token-2"),  # the token of another request
            await receiver.post({"auth_req_id": "never-started"}, "ping-token-1"),
        ]
    assert [a.status_code for a in answers] == [401] * 5
    assert all(a.headers["www-authenticate"] == "Bearer" for a in answers)
    assert receiver.received == []
    assert other.auth_req_id != started.auth_req_id


@BOTH
@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b"{}", b'{"auth_req_id": 42}', b'{"auth_req_id": ""}'],
    ids=["not JSON", "array", "no auth_req_id", "number", "empty"],
)
async def test_malformed_body_is_400(
    offline_client: CibaClient, receiver_for: ReceiverFor, body: bytes
) -> None:
    lookup = lookup_in({"req-1": "ping-token-1"})
    async with receiver_for(offline_client, "ping", token_lookup=lookup) as receiver:
        answer = await receiver.post(body, "ping-token-1")
    assert answer.status_code == 400
    assert receiver.received == []


async def test_oversized_body_is_413(offline_client: CibaClient, receiver_for: ReceiverFor) -> None:
    body = {"auth_req_id": "req-1", "padding": "x" * 300_000}
    lookup = lookup_in({"req-1": "ping-token-1"})
    async with receiver_for(offline_client, "ping", token_lookup=lookup) as receiver:
        answer = await receiver.post(body, "ping-token-1")
    assert answer.status_code == 413


async def test_tokens_can_be_looked_up_where_the_relying_party_keeps_them(
    offline_client: CibaClient, receiver_for: ReceiverFor
) -> None:
    lookup = lookup_in({"req-from-another-process": "its-token"})
    async with receiver_for(offline_client, "ping", token_lookup=lookup) as receiver:
        answer = await receiver.post({"auth_req_id": "req-from-another-process"}, "its-token")
        wrong = await receiver.post({"auth_req_id": "req-from-another-process"}, "not-its-token")
    assert (answer.status_code, wrong.status_code) == (204, 401)
    assert receiver.received == [PingNotification("req-from-another-process")]


@pytest.fixture
async def raw(server: ServedApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url) as http:
        yield http


async def _real_tokens(
    client: CibaClient,
    raw: httpx.AsyncClient,
    rp: RegisteredClient,
    db: asyncpg.Connection,
    notification_token: str,
) -> dict[str, Any]:
    """What the server would push for a request this client started: its token response."""
    started = await _start(client, notification_token)
    await decide(db, started.auth_req_id, "approved")
    answer = await poll(raw, rp.basic_auth(), started.auth_req_id)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return {**body, "auth_req_id": started.auth_req_id}


@BOTH
@pytest.mark.usefixtures("alice")
async def test_pushed_tokens_are_verified_and_handed_over(
    client: CibaClient,
    receiver_for: ReceiverFor,
    raw: httpx.AsyncClient,
    rp: RegisteredClient,
    db: asyncpg.Connection,
) -> None:
    pushed = await _real_tokens(client, raw, rp, db, "push-token-1")
    async with receiver_for(client, "push") as receiver:
        answer = await receiver.post(pushed, "push-token-1")
        again = await receiver.post(pushed, "push-token-1")
    assert answer.status_code == 204
    [notification] = receiver.received
    assert isinstance(notification, PushedTokens)
    assert notification.auth_req_id == pushed["auth_req_id"]
    assert notification.tokens.access_token == pushed["access_token"]
    assert notification.tokens.id_token_claims is not None
    assert notification.tokens.id_token_claims["sub"] == "alice"
    assert again.status_code == 401  # the request is finished: its token is forgotten


@pytest.mark.usefixtures("alice")
@pytest.mark.parametrize("swapped", ["access_token", "refresh_token", "id_token"])
async def test_push_whose_tokens_do_not_belong_together_is_400(
    client: CibaClient,
    receiver_for: ReceiverFor,
    raw: httpx.AsyncClient,
    rp: RegisteredClient,
    db: asyncpg.Connection,
    swapped: str,
) -> None:
    pushed = await _real_tokens(client, raw, rp, db, "push-token-1")
    other = await _real_tokens(client, raw, rp, db, "push-token-2")
    # at_hash, rt_hash or the auth_req_id claim now names the other request's token.
    mixed = {**pushed, swapped: other[swapped]}
    async with receiver_for(client, "push") as receiver:
        answer = await receiver.post(mixed, "push-token-1")
    assert answer.status_code == 400
    assert receiver.received == []


@BOTH
async def test_pushed_error_is_handed_over_as_the_matching_oauth_error(
    offline_client: CibaClient, receiver_for: ReceiverFor
) -> None:
    lookup = lookup_in({"req-1": "push-token-1", "req-2": "push-token-2"})
    async with receiver_for(offline_client, "push", token_lookup=lookup) as receiver:
        first = await receiver.post(
            {
                "auth_req_id": "req-1",
                "error": "transaction_failed",
                "error_description": "the payment could not be made",
            },
            "push-token-1",
        )
        second = await receiver.post(
            {"auth_req_id": "req-2", "error": "access_denied"}, "push-token-2"
        )
    assert (first.status_code, second.status_code) == (204, 204)
    errors = [n for n in receiver.received if isinstance(n, PushedError)]
    assert [type(n.error) for n in errors] == [TransactionFailed, AccessDenied]
    assert errors[0].error.error_description == "the payment could not be made"
    assert errors[0].error.status is None


async def test_pushed_error_without_a_string_code_is_400(
    offline_client: CibaClient, receiver_for: ReceiverFor
) -> None:
    lookup = lookup_in({"req-1": "push-token-1"})
    async with receiver_for(offline_client, "push", token_lookup=lookup) as receiver:
        answer = await receiver.post({"auth_req_id": "req-1", "error": 7}, "push-token-1")
    assert answer.status_code == 400


async def test_push_whose_id_token_lacks_at_hash_is_400(
    new_client: NewClient, receiver_for: ReceiverFor
) -> None:
    """Poll mode may omit at_hash; push may not (CIBA §10.3.1)."""
    async with run_stand_in_issuer("rp-1") as stand_in:
        client = await new_client(stand_in.url, ClientSecretBasic("rp-1", "secret"))
        body = {**stand_in.token_response("req-1", at_hash=None), "auth_req_id": "req-1"}
        lookup = lookup_in({"req-1": "push-token-1"})
        async with receiver_for(client, "push", token_lookup=lookup) as receiver:
            answer = await receiver.post(body, "push-token-1")
    assert answer.status_code == 400
