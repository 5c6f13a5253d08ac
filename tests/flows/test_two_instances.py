"""Two app instances on one database behave as one service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from backchannel.settings import Settings
from tests.conftest import RegisteredClient, RunningApp, start_app
from tests.support.ciba import decide, poll, rewind, start_auth_req_id

pytestmark = pytest.mark.usefixtures("alice")


@pytest.fixture
async def second(settings: Settings) -> AsyncIterator[RunningApp]:
    async for app in start_app(settings):
        yield app


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
        poll(second.http, rp.basic_auth(), auth_req_id, {"Prefer": "wait=15"})
    )
    await asyncio.sleep(0.3)
    started = time.monotonic()
    async with running.services.pool.acquire() as conn:
        await decide(conn, auth_req_id, "approved")
    response = await asyncio.wait_for(held, 5)
    assert response.status_code == 200, response.text
    assert time.monotonic() - started < 1.0


async def test_held_polls_on_both_instances_redeem_only_once(
    running: RunningApp, second: RunningApp, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    auth_req_id = await start_auth_req_id(running.http, rp.basic_auth())
    first = asyncio.create_task(
        poll(running.http, rp.basic_auth(), auth_req_id, {"Prefer": "wait=15"})
    )
    await asyncio.sleep(0.2)
    await rewind(db, auth_req_id, 6)
    other = asyncio.create_task(
        poll(second.http, rp.basic_auth(), auth_req_id, {"Prefer": "wait=15"})
    )
    await asyncio.sleep(0.2)
    await decide(db, auth_req_id, "approved")
    answers = await asyncio.wait_for(asyncio.gather(first, other), 5)
    assert sorted(r.status_code for r in answers) == [200, 400]
    assert [error_of(r) for r in answers if r.status_code == 400] == ["invalid_grant"]


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
    await asyncio.sleep(0.3)
    response = await poll(second.http, rp.basic_auth(), auth_req_id)
    assert response.status_code == 401
