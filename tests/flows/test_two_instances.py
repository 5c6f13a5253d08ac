"""Two app instances on one database behave as one service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from backchannel.db.pool import connect
from backchannel.oauth.secrets import hash_secret
from backchannel.settings import Settings
from tests.conftest import RegisteredClient, RunningApp, start_app
from tests.support.ciba import decide, poll, rewind, start_auth_req_id
from tests.support.waiting import eventually

pytestmark = pytest.mark.usefixtures("alice")


@pytest.fixture
async def second(settings: Settings) -> AsyncIterator[RunningApp]:
    async for app in start_app(settings):
        yield app


POLLERS = 6  # three per instance: well within each one's connection pool


async def waiting_on_locks(db: asyncpg.Connection, count: int) -> bool:
    """True once ``count`` other sessions of this database wait for a lock."""
    waiting = await db.fetchval(
        """SELECT count(*) FROM pg_stat_activity
            WHERE datname = current_database() AND wait_event_type = 'Lock'"""
    )
    return bool(waiting >= count)


async def polls_waiting_on_the_row(db: asyncpg.Connection, count: int) -> bool:
    """True once ``count`` poll statements wait for a lock (the row the test holds)."""
    waiting = await db.fetchval(
        """SELECT count(*) FROM pg_stat_activity
            WHERE datname = current_database() AND wait_event_type = 'Lock'
              AND query LIKE '%auth_requests%'"""
    )
    return bool(waiting >= count)


async def holding(app: RunningApp, count: int) -> bool:
    """True once ``app`` holds at least ``count`` long polls."""
    return app.services.waiters.held >= count


def error_of(response: Any) -> str:
    return response.json()["error"] if response.status_code != 503 else "503"


async def test_alternating_between_instances_cannot_reset_the_interval(
    running: RunningApp, second: RunningApp, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    auth_req_id = await start_auth_req_id(running.http, rp.basic_auth())
    first = await poll(running.http, rp.basic_auth(), auth_req_id)
    assert error_of(first) == "authorization_pending"
    assert error_of(await poll(second.http, rp.basic_auth(), auth_req_id)) == "slow_down"
    await rewind(db, auth_req_id, 6)  # past 5 s, not past the raised 10 s
    assert error_of(await poll(running.http, rp.basic_auth(), auth_req_id)) == "slow_down"
    assert await db.fetchval("SELECT poll_interval FROM auth_requests") == 15


async def test_alternating_between_instances_cannot_escape_the_lockout(
    running: RunningApp, second: RunningApp, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    auth_req_id = await start_auth_req_id(running.http, rp.basic_auth())
    apps = [running, second]
    answers = [
        error_of(await poll(apps[i % 2].http, rp.basic_auth(), auth_req_id)) for i in range(12)
    ]
    assert answers[0] == "authorization_pending"
    assert answers[1:8] == ["slow_down"] * 7
    assert answers[8:] == ["503"] * 4
    assert await db.fetchval("SELECT poll_strikes FROM auth_requests") == 11


async def test_decision_on_one_instance_wakes_a_long_poll_held_by_the_other(
    running: RunningApp, second: RunningApp, rp: RegisteredClient, database_url: str
) -> None:
    auth_req_id = await start_auth_req_id(running.http, rp.basic_auth())
    held = asyncio.create_task(
        poll(second.http, rp.basic_auth(), auth_req_id, {"Prefer": "wait=25"})
    )
    await eventually(lambda: holding(second, 1))
    async with running.services.pool.acquire() as conn:
        await decide(conn, auth_req_id, "approved")
    # Answered long before the 25 s wait runs out: the decision woke it.
    response = await asyncio.wait_for(held, 10)
    assert response.status_code == 200, response.text


async def test_held_polls_woken_together_on_both_instances_redeem_only_once(
    running: RunningApp,
    second: RunningApp,
    rp: RegisteredClient,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    """Woken polls re-read without pacing, so they all find the request approved and
    reach redemption together: exactly one gets tokens (the conditional UPDATE)."""
    auth_req_id = await start_auth_req_id(running.http, rp.basic_auth())
    apps = [running, second]
    held = []
    for i in range(6):
        app = apps[i % 2]
        before = app.services.waiters.held
        held.append(
            asyncio.create_task(poll(app.http, rp.basic_auth(), auth_req_id, {"Prefer": "wait=25"}))
        )

        async def counted_and_held(app: RunningApp = app, before: int = before, n: int = i) -> bool:
            # The waiter is registered before the poll statement runs: wait for both.
            polls = await db.fetchval("SELECT poll_count FROM auth_requests")
            return bool(polls == n + 1) and await holding(app, before + 1)

        await eventually(counted_and_held)
        await rewind(db, auth_req_id, 6)  # the next poll is on time, so it is held too
    blocker = await connect(database_url)
    try:
        async with blocker.transaction():
            # Token issuance waits on this lock, so every woken poll reads "approved" and
            # queues its redemption on the request's row before the first one commits.
            await blocker.execute("LOCK TABLE access_tokens IN SHARE MODE")
            await decide(db, auth_req_id, "approved")
            await eventually(lambda: waiting_on_locks(db, 6), within=30)
    finally:
        await blocker.close()
    answers = await asyncio.wait_for(asyncio.gather(*held), 20)
    assert sorted(r.status_code for r in answers) == [200] + [400] * 5
    assert {error_of(r) for r in answers if r.status_code == 400} == {"invalid_grant"}
    # Each loser read "approved" and lost at redemption: it is told the id was used.
    assert {r.json()["error_description"] for r in answers if r.status_code == 400} == {
        "auth_req_id has already been used"
    }
    assert await db.fetchval("SELECT count(*) FROM access_tokens") == 1


async def test_concurrent_polls_across_instances_get_one_pending_and_the_rest_slow_down(
    settings: Settings, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    """A poll is judged under the row lock, on the newest row version: polls that
    arrive together cannot all see the same last poll time and all pass."""
    warm = settings.replace(db_pool_min=POLLERS)  # connections open before the race
    async for first in start_app(warm):
        async for other in start_app(warm):
            auth_req_id = await start_auth_req_id(first.http, rp.basic_auth())
            await poll(other.http, rp.basic_auth(), "warm-the-client-cache")
            apps = [first, other]
            async with db.transaction():
                # Hold the row, so that every poll arrives before any is judged.
                await db.execute(
                    "SELECT 1 FROM auth_requests WHERE id_hash = $1 FOR UPDATE",
                    hash_secret(auth_req_id),
                )
                polls = [
                    asyncio.create_task(poll(apps[i % 2].http, rp.basic_auth(), auth_req_id))
                    for i in range(POLLERS)
                ]
                # Two polls queued on the row are enough to race (the rest may be slower
                # to arrive on a loaded machine); the verdicts must hold for all of them.
                await eventually(lambda: polls_waiting_on_the_row(db, 2), within=30)
            answers = await asyncio.gather(*polls)
            errors = sorted(error_of(r) for r in answers)
            assert errors == ["authorization_pending"] + ["slow_down"] * (POLLERS - 1)
            assert await db.fetchval("SELECT poll_strikes FROM auth_requests") == POLLERS - 1


async def test_client_disabled_on_one_instance_is_refused_by_the_other(
    running: RunningApp, second: RunningApp, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    from backchannel.db.listener import CONFIG_CHANNEL

    auth_req_id = await start_auth_req_id(second.http, rp.basic_auth())
    assert auth_req_id
    async with db.transaction():
        await db.execute(
            "UPDATE clients SET disabled_at = now() WHERE client_id = $1", rp.client_id
        )
        await db.execute("SELECT pg_notify($1, $2)", CONFIG_CHANNEL, f"client:{rp.client_id}")

    async def refused_by_the_other() -> bool:
        cached = await second.services.clients.get(rp.client_id)
        return cached is not None and cached.disabled

    await eventually(refused_by_the_other)
    response = await poll(second.http, rp.basic_auth(), auth_req_id)
    assert response.status_code == 401
