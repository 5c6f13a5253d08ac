"""Waiting for the decision: long polling, and polling paced as CIBA requires.

Tests that need minutes of pacing give the client a ``ServerTime`` clock: its
sleeps pass at once and move the server's stored request times back by as
much, so the real server judges every poll as if the time had gone by.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from backchannel.errors import NOT_ME_DESCRIPTION
from backchannel.rp import AccessDenied, CibaClient, ExpiredToken, InvalidGrant, ReportedNotMe
from backchannel.settings import Settings
from tests.conftest import RegisteredClient
from tests.rp.conftest import MakeClient, NewClient, basic
from tests.support.ciba import decide, poll, poll_is_held, rewind
from tests.support.relying_party import RequestLog, ServerTime
from tests.support.served import ServedApp, serve_over_hypercorn
from tests.support.waiting import eventually

pytestmark = pytest.mark.usefixtures("alice")

AUTH_REQ_ID_CLAIM = "urn:openid:params:jwt:claim:auth_req_id"


async def _strikes(db: asyncpg.Connection) -> int:
    strikes: int = await db.fetchval("SELECT poll_strikes FROM auth_requests")
    return strikes


def _approve_during_sleep(
    server_time: ServerTime, db: asyncpg.Connection, auth_req_id: str, n: int
) -> None:
    async def during(count: int) -> None:
        if count == n:
            await decide(db, auth_req_id, "approved")

    server_time.during_sleep = during


@pytest.fixture
async def raw(server: ServedApp) -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP client for polls the library would never send (another process's)."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        yield http


async def test_long_poll_returns_verified_tokens_as_soon_as_the_user_approves(
    make_rp_client: MakeClient,
    server: ServedApp,
    rp: RegisteredClient,
    db: asyncpg.Connection,
    requests_sent: RequestLog,
) -> None:
    client = await make_rp_client(basic(rp))
    started = await client.start(login_hint="alice@example.com", scope="openid email")
    waiting = asyncio.create_task(client.wait(started))
    await eventually(lambda: poll_is_held(db, server.services.waiters))
    await decide(db, started.auth_req_id, "approved")
    # Long before the held poll's 25 s run out: the approval woke it.
    tokens = await asyncio.wait_for(waiting, 12)

    [held] = requests_sent.to("/token")
    assert held.headers["Prefer"] == "wait=25"
    assert tokens.token_type == "Bearer" and tokens.refresh_token
    assert tokens.scope == "openid email"
    assert tokens.id_token_claims is not None
    assert tokens.id_token_claims["sub"] == "alice"
    assert tokens.id_token_claims[AUTH_REQ_ID_CLAIM] == started.auth_req_id


async def test_long_poll_asks_no_longer_than_the_request_has_left(
    make_rp_client: MakeClient,
    rp: RegisteredClient,
    db: asyncpg.Connection,
    requests_sent: RequestLog,
) -> None:
    client = await make_rp_client(basic(rp))
    started = await client.start(login_hint="alice@example.com", requested_expiry=10)
    await decide(db, started.auth_req_id, "approved")
    await client.wait(started)
    asked = requests_sent.to("/token")[0].headers["Prefer"]
    assert asked in ("wait=9", "wait=10")  # what is left of 10 s, not the usual 25


async def _paced_server(settings: Settings, **changes: object) -> AsyncIterator[ServedApp]:
    async with serve_over_hypercorn(settings.replace(**changes)) as served:
        yield served


async def test_poll_held_for_the_whole_interval_is_followed_by_the_next_at_once(
    settings: Settings,
    new_client: NewClient,
    rp: RegisteredClient,
    db: asyncpg.Connection,
    server_time: ServerTime,
    requests_sent: RequestLog,
) -> None:
    async for served in _paced_server(settings, poll_interval=1, long_poll_max=1):
        client = await new_client(served.url, basic(rp), clock=server_time)
        started = await client.start(login_hint="alice@example.com")
        waiting = asyncio.create_task(client.wait(started))
        for _ in range(200):  # three held polls, then the user approves
            if len(requests_sent.to("/token")) >= 3:
                break
            await asyncio.sleep(0.05)
        await decide(db, started.auth_req_id, "approved")
        await asyncio.wait_for(waiting, 10)

    assert server_time.sleeps == []  # each poll was held 1 s, the whole interval
    assert await _strikes(db) == 0


async def test_poll_held_for_less_than_the_interval_waits_out_the_rest_of_it(
    settings: Settings,
    new_client: NewClient,
    rp: RegisteredClient,
    db: asyncpg.Connection,
    server_time: ServerTime,
) -> None:
    async for served in _paced_server(settings, long_poll_max=1):
        client = await new_client(served.url, basic(rp), clock=server_time)
        started = await client.start(login_hint="alice@example.com")
        _approve_during_sleep(server_time, db, started.auth_req_id, 1)
        await client.wait(started)

    [slept] = server_time.sleeps
    assert 3.5 < slept < 4.1  # the 5 s interval counts from the start of the held poll
    assert await _strikes(db) == 0


async def test_server_that_does_not_hold_polls_is_polled_every_interval_and_asked_no_more(
    settings: Settings,
    new_client: NewClient,
    rp: RegisteredClient,
    db: asyncpg.Connection,
    server_time: ServerTime,
    requests_sent: RequestLog,
) -> None:
    async for served in _paced_server(settings, long_poll_max=0):
        client = await new_client(served.url, basic(rp), clock=server_time)
        started = await client.start(login_hint="alice@example.com")
        _approve_during_sleep(server_time, db, started.auth_req_id, 2)
        tokens = await client.wait(started.auth_req_id)  # the id alone: the client noted the rest

    assert tokens.access_token
    assert server_time.sleeps == [5, 5]
    polls = requests_sent.to("/token")
    assert [p.headers.get("Prefer") for p in polls] == ["wait=25", None, None]
    assert await _strikes(db) == 0


async def test_without_long_polling_the_client_never_asks_the_server_to_hold(
    make_rp_client: MakeClient,
    rp: RegisteredClient,
    db: asyncpg.Connection,
    server_time: ServerTime,
    requests_sent: RequestLog,
) -> None:
    client = await make_rp_client(basic(rp), clock=server_time, long_poll_wait=0)
    started = await client.start(login_hint="alice@example.com")
    _approve_during_sleep(server_time, db, started.auth_req_id, 1)
    await client.wait(started)
    assert server_time.sleeps == [5]
    assert all("Prefer" not in p.headers for p in requests_sent.to("/token"))


async def test_slow_down_adds_five_seconds_to_the_interval_for_good(
    make_rp_client: MakeClient,
    rp: RegisteredClient,
    db: asyncpg.Connection,
    server_time: ServerTime,
    raw: httpx.AsyncClient,
) -> None:
    client = await make_rp_client(basic(rp), clock=server_time, long_poll_wait=0)
    started = await client.start(login_hint="alice@example.com")
    await poll(raw, rp.basic_auth(), started.auth_req_id)  # so the client's first poll is early
    _approve_during_sleep(server_time, db, started.auth_req_id, 2)
    await client.wait(started)

    assert server_time.sleeps == [10, 10]
    assert await _strikes(db) == 1  # the slow_down itself, and no strike after it


async def test_retry_after_of_a_locked_request_is_waited_out_and_kept_as_the_interval(
    make_rp_client: MakeClient,
    rp: RegisteredClient,
    db: asyncpg.Connection,
    server_time: ServerTime,
    raw: httpx.AsyncClient,
) -> None:
    client = await make_rp_client(basic(rp), clock=server_time, long_poll_wait=0)
    started = await client.start(login_hint="alice@example.com")
    burst = [await poll(raw, rp.basic_auth(), started.auth_req_id) for _ in range(20)]
    assert burst[-1].status_code == 503
    retry_after = int(burst[-1].headers["Retry-After"])

    strikes_after_first_poll: list[int] = []

    async def during(count: int) -> None:
        if count == 1:
            strikes_after_first_poll.append(await _strikes(db))
        if count == 2:
            await decide(db, started.auth_req_id, "approved")

    server_time.during_sleep = during
    tokens = await client.wait(started)

    assert tokens.access_token
    assert server_time.sleeps == [retry_after, retry_after]
    assert await _strikes(db) == strikes_after_first_poll[0]  # never struck once it knew


class GaveUp(Exception):
    """The caller stops waiting (a shutdown, a cancelled task) between two polls."""


async def test_wait_given_up_between_polls_can_be_taken_up_again(
    make_rp_client: MakeClient,
    rp: RegisteredClient,
    db: asyncpg.Connection,
    server_time: ServerTime,
) -> None:
    client = await make_rp_client(basic(rp), clock=server_time, long_poll_wait=0)
    started = await client.start(
        login_hint="alice@example.com", requested_expiry=60, client_notification_token="t-1"
    )

    async def give_up(count: int) -> None:
        raise GaveUp

    server_time.during_sleep = give_up
    with pytest.raises(GaveUp):
        await client.wait(started)
    # Still noted: the notification token for the receiver, the pacing for the next wait.
    assert client.notification_token_for(started.auth_req_id) == "t-1"

    server_time.during_sleep = None
    await decide(db, started.auth_req_id, "approved")
    await client.wait(started.auth_req_id)
    assert await _strikes(db) == 0
    assert client.notification_token_for(started.auth_req_id) is None  # done with it


async def test_denied_request_raises_access_denied(
    client: CibaClient, db: asyncpg.Connection
) -> None:
    started = await client.start(login_hint="alice@example.com")
    await decide(db, started.auth_req_id, "denied")
    with pytest.raises(AccessDenied) as caught:
        await client.wait(started)
    assert caught.value.status == 400
    assert type(caught.value) is AccessDenied


async def test_request_the_user_reported_as_not_theirs_raises_reported_not_me(
    client: CibaClient, db: asyncpg.Connection
) -> None:
    started = await client.start(login_hint="alice@example.com")
    await decide(db, started.auth_req_id, "denied", reason="not_me")
    with pytest.raises(ReportedNotMe) as caught:
        await client.wait(started)
    assert isinstance(caught.value, AccessDenied)  # code that needs no distinction is unchanged
    assert (caught.value.error, caught.value.status) == ("access_denied", 400)
    # The library's description is the server's, word for word.
    assert caught.value.error_description == NOT_ME_DESCRIPTION == ReportedNotMe.description


async def test_request_the_server_has_expired_raises_expired_token(
    client: CibaClient, db: asyncpg.Connection
) -> None:
    started = await client.start(login_hint="alice@example.com")
    await rewind(db, started.auth_req_id, started.expires_in + 1)
    with pytest.raises(ExpiredToken) as caught:
        await client.wait(started)
    assert caught.value.status == 400


async def test_client_stops_polling_once_expires_in_has_passed(
    make_rp_client: MakeClient,
    rp: RegisteredClient,
    db: asyncpg.Connection,
    server_time: ServerTime,
    requests_sent: RequestLog,
) -> None:
    client = await make_rp_client(basic(rp), clock=server_time, long_poll_wait=0)
    started = await client.start(login_hint="alice@example.com", requested_expiry=12)
    with pytest.raises(ExpiredToken) as caught:
        await client.wait(started)

    assert caught.value.status is None  # the client's own conclusion, not the server's answer
    assert server_time.sleeps == [5, 5]  # polls at 0, 5 and 10 s; at 15 s it had expired
    assert len(requests_sent.to("/token")) == 3


async def test_unknown_auth_req_id_raises_invalid_grant(client: CibaClient) -> None:
    with pytest.raises(InvalidGrant) as caught:
        await client.wait("no-such-request")
    assert caught.value.status == 400
