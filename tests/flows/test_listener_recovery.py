"""When the LISTEN connection is lost, what it missed is caught up on reconnect.

The test terminates the listener's backend (as a failover or an idle-session
killer would) and changes state while the listener is away: the notifications
of those changes are lost, so only the reconnect path (wake held polls, drop
cached clients, policy and keys) can bring the replica up to date.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

from backchannel.db.listener import CONFIG_CHANNEL
from backchannel.db.users import User
from backchannel.key_wrapping import NO_WRAPPING
from backchannel.oauth.keys import rotate_signing_keys
from backchannel.policy.rules import parse_rule
from backchannel.policy.store import add_rule
from tests.conftest import RegisteredClient, RunningApp
from tests.support.ciba import decide, poll, start_auth_req_id, start_request
from tests.support.postgres import with_database
from tests.support.waiting import eventually

pytestmark = pytest.mark.usefixtures("alice")


@contextlib.asynccontextmanager
async def listener_away(app: RunningApp, db: asyncpg.Connection) -> AsyncIterator[None]:
    """Terminate the LISTEN backend and keep the listener from reconnecting while the
    block runs (the database takes no new connections meanwhile); afterwards, wait
    until it is back on a new backend."""
    listener = app.services.listener
    old_pid = listener.server_pid
    assert old_pid is not None
    database = await db.fetchval("SELECT current_database()")
    dsn = app.services.settings.database_url
    assert dsn is not None
    admin = await asyncpg.connect(with_database(dsn, "postgres"))
    await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
    try:
        assert await db.fetchval("SELECT pg_terminate_backend($1)", old_pid)
        await eventually(lambda: _lost(app))
        yield
    finally:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await admin.close()

    async def back() -> bool:
        return listener.connected and listener.server_pid not in (None, old_pid)

    await eventually(back, within=15)


async def _lost(app: RunningApp) -> bool:
    return not app.services.listener.connected


async def test_a_held_poll_hears_of_a_decision_made_while_the_listener_was_away(
    running: RunningApp, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    auth_req_id = await start_auth_req_id(running.http, rp.basic_auth())
    held = asyncio.create_task(
        poll(running.http, rp.basic_auth(), auth_req_id, {"Prefer": "wait=25"})
    )
    await eventually(lambda: _holds(running))
    async with listener_away(running, db):
        await decide(db, auth_req_id, "approved")  # its NOTIFY reaches nobody
    # Answered long before the 25 s wait ends: the reconnect woke it to read again.
    response = await asyncio.wait_for(held, 12)
    assert response.status_code == 200, response.text


async def test_a_client_disabled_while_the_listener_was_away_is_refused_after_it_returns(
    running: RunningApp, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    await start_auth_req_id(running.http, rp.basic_auth())  # the client is cached now
    async with listener_away(running, db), db.transaction():
        await db.execute("UPDATE clients SET disabled_at = now()")
        await db.execute("SELECT pg_notify($1, $2)", CONFIG_CHANNEL, f"client:{rp.client_id}")
    response = await start_request(running.http, rp.basic_auth())
    assert response.status_code == 401


async def test_a_policy_added_while_the_listener_was_away_applies_after_it_returns(
    running: RunningApp, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    assert (await start_request(running.http, rp.basic_auth())).status_code == 200
    async with listener_away(running, db):
        await add_rule(db, parse_rule({"name": "closed", "effect": "deny", "mode": "enforce"}))
    response = await start_request(running.http, rp.basic_auth())
    assert response.status_code == 403, response.text


async def test_keys_rotated_while_the_listener_was_away_sign_after_it_returns(
    running: RunningApp, rp: RegisteredClient, db: asyncpg.Connection, alice: User
) -> None:
    async with listener_away(running, db):
        [rotated] = await rotate_signing_keys(db, NO_WRAPPING, ["ES256"])

    async def signs_with_the_new_key() -> bool:
        return running.services.keys.signing_key("ES256").kid == rotated.kid

    await eventually(signs_with_the_new_key)
    jwks = (await running.http.get("/jwks")).json()
    assert rotated.kid in {k["kid"] for k in jwks["keys"]}


async def _holds(app: RunningApp) -> bool:
    return app.services.waiters.held > 0
