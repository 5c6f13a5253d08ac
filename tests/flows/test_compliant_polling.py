"""A client that does what the server tells it is never trapped by the poll lockout.

The OpenID conformance suite's ``multiple-call-to-token-endpoint`` bursts 20
polls, has the user approve, and then polls like a compliant client: +5 s to
its interval on every ``slow_down`` (RFC 8628 §3.5) and every ``Retry-After``
waited out (RFC 9110 §10.2.3). Time passes by moving the request's stored
timestamps into the past, so the test runs in well under a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from backchannel.settings import Settings
from tests.conftest import RegisteredClient, RunningApp, start_app
from tests.support.ciba import decide, poll, rewind, start_request

pytestmark = pytest.mark.usefixtures("alice")

BURST = 20


@pytest.fixture
async def second(settings: Settings) -> AsyncIterator[RunningApp]:
    async for app in start_app(settings):
        yield app


class CompliantClient:
    """Polls as CIBA §7.3 / RFC 8628 §3.5 / RFC 9110 §10.2.3 tell it to."""

    def __init__(
        self, db: asyncpg.Connection, rp: RegisteredClient, auth_req_id: str, interval: int
    ) -> None:
        self.db = db
        self.rp = rp
        self.auth_req_id = auth_req_id
        self.interval = interval
        self.wait = 0

    def heed(self, answers: list[httpx.Response]) -> None:
        """Take the instructions of answers received together (a burst)."""
        self.interval += 5 * sum(_error_of(a) == "slow_down" for a in answers)
        retry_after = [int(a.headers["retry-after"]) for a in answers if a.status_code == 503]
        self.wait = max(retry_after) if retry_after else self.interval

    async def poll_after_waiting(self, http: httpx.AsyncClient) -> httpx.Response:
        await rewind(self.db, self.auth_req_id, self.wait)
        answer = await poll(http, self.rp.basic_auth(), self.auth_req_id)
        self.heed([answer])
        return answer


def _error_of(response: httpx.Response) -> str:
    if response.status_code == 503:
        return "503"
    if response.status_code == 200:
        return "tokens"
    error: str = response.json()["error"]
    return error


async def _pacing(db: asyncpg.Connection) -> tuple[int, int, str]:
    row = await db.fetchrow("SELECT poll_strikes, lock_count, status FROM auth_requests")
    assert row is not None
    return row["poll_strikes"], row["lock_count"], row["status"]


async def _start(http: httpx.AsyncClient, rp: RegisteredClient) -> tuple[str, int]:
    response = await start_request(http, rp.basic_auth())
    assert response.status_code == 200, response.text
    body = response.json()
    return body["auth_req_id"], body.get("interval", 5)


async def _burst_sequentially(
    apps: list[RunningApp], rp: RegisteredClient, auth_req_id: str
) -> list[httpx.Response]:
    return [
        await poll(apps[i % len(apps)].http, rp.basic_auth(), auth_req_id) for i in range(BURST)
    ]


async def _burst_concurrently(
    apps: list[RunningApp], rp: RegisteredClient, auth_req_id: str
) -> list[httpx.Response]:
    return list(
        await asyncio.gather(
            *(poll(apps[i % len(apps)].http, rp.basic_auth(), auth_req_id) for i in range(BURST))
        )
    )


async def test_burst_then_approval_then_compliant_polling_gets_tokens_at_the_first_poll(
    running: RunningApp, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    auth_req_id, interval = await _start(running.http, rp)
    answers = await _burst_sequentially([running], rp, auth_req_id)
    assert {_error_of(a) for a in answers} <= {"authorization_pending", "slow_down", "503"}
    assert "503" in {_error_of(a) for a in answers}, "the burst should reach the lock"
    strikes, locks, status = await _pacing(db)
    assert status == "pending"

    client = CompliantClient(db, rp, auth_req_id, interval)
    client.heed(answers)
    await decide(db, auth_req_id, "approved")
    answer = await client.poll_after_waiting(running.http)

    assert answer.status_code == 200, answer.text
    assert await _pacing(db) == (strikes, locks, "redeemed")


async def test_retry_after_covers_the_raised_interval_not_only_the_lock(
    running: RunningApp, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    auth_req_id, _ = await _start(running.http, rp)
    answers = await _burst_sequentially([running], rp, auth_req_id)
    locked = answers[-1]
    assert locked.status_code == 503
    interval = await db.fetchval("SELECT poll_interval FROM auth_requests")
    lock_seconds = running.services.settings.poll_lock_seconds
    assert interval > lock_seconds
    assert int(locked.headers["retry-after"]) == interval


async def test_compliant_client_is_never_struck_again_while_the_user_takes_their_time(
    running: RunningApp, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    auth_req_id, interval = await _start(running.http, rp)
    client = CompliantClient(db, rp, auth_req_id, interval)
    client.heed(await _burst_sequentially([running], rp, auth_req_id))
    strikes, locks, _ = await _pacing(db)

    for _ in range(4):
        answer = await client.poll_after_waiting(running.http)
        assert _error_of(answer) == "authorization_pending"
    await decide(db, auth_req_id, "approved")
    answer = await client.poll_after_waiting(running.http)

    assert answer.status_code == 200, answer.text
    assert await _pacing(db) == (strikes, locks, "redeemed")


@pytest.mark.parametrize("burst", [_burst_sequentially, _burst_concurrently])
async def test_burst_spread_over_two_replicas_does_not_trap_a_compliant_client(
    burst: object,
    running: RunningApp,
    second: RunningApp,
    rp: RegisteredClient,
    db: asyncpg.Connection,
) -> None:
    auth_req_id, interval = await _start(running.http, rp)
    answers = await burst([running, second], rp, auth_req_id)  # type: ignore[operator]
    assert {_error_of(a) for a in answers} <= {"authorization_pending", "slow_down", "503"}
    strikes, locks, _ = await _pacing(db)
    assert locks >= 1

    client = CompliantClient(db, rp, auth_req_id, interval)
    client.heed(answers)
    await decide(db, auth_req_id, "approved")
    answer = await client.poll_after_waiting(second.http)

    assert answer.status_code == 200, answer.text
    assert await _pacing(db) == (strikes, locks, "redeemed")


async def test_client_that_retries_at_the_lock_end_but_inside_its_interval_is_struck(
    running: RunningApp, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    """The lockout still bites a client that ignores the raised interval."""
    auth_req_id, _ = await _start(running.http, rp)
    await _burst_sequentially([running], rp, auth_req_id)
    strikes, locks, _ = await _pacing(db)
    await rewind(db, auth_req_id, running.services.settings.poll_lock_seconds + 1)
    answer = await poll(running.http, rp.basic_auth(), auth_req_id)
    assert answer.status_code == 503
    assert await _pacing(db) == (strikes + 1, locks + 1, "pending")
