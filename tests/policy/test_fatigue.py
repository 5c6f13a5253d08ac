"""Push-fatigue caps, the mute after "this wasn't me", and client auto-suspension."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from backchannel.db.users import User
from backchannel.oauth.decision_recording import record_decision
from backchannel.oauth.registration import set_client_disabled
from backchannel.oauth.secrets import hash_secret
from backchannel.policy.fatigue import NotMeLimits
from backchannel.settings import Settings
from tests.conftest import RegisteredClient, RunningApp, start_app
from tests.support import factories
from tests.support.ciba import audit_events, decide, poll, start_auth_req_id, start_request


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(
        fatigue_max_pending=3,
        fatigue_max_prompts=10,
        fatigue_window=600,
        not_me_mute=1800,
        not_me_suspend_after=3,
        not_me_suspend_window=86400,
    )


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body.get("error", ""), body.get("error_description", "")


async def not_me(
    conn: asyncpg.Connection, auth_req_id: str, limits: NotMeLimits | None = None
) -> None:
    await record_decision(
        conn,
        hash_secret(auth_req_id),
        "denied",
        reason="not_me",
        device_id="phone-1",
        not_me_limits=limits,
    )


async def test_the_pending_cap_refuses_a_fourth_pending_request_without_prompting(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    first = await start_auth_req_id(http, rp.basic_auth())
    for _ in range(2):
        await start_auth_req_id(http, rp.basic_auth())
    refused = await start_request(http, rp.basic_auth())
    assert error_of(refused) == (403, "access_denied", "too many pending requests for this user")
    assert await db.fetchval("SELECT count(*) FROM auth_requests") == 3
    [row] = await audit_events(db, "fatigue_refused")
    assert (row["client_id"], row["user_id"]) == (rp.client_id, alice.user_id)
    assert row["detail"] == {"error": "access_denied", "cap": "pending", "limit": 3, "count": 3}
    # Once one is decided there is room again.
    await decide(db, first, "denied")
    assert (await start_request(http, rp.basic_auth())).status_code == 200


async def test_the_pending_cap_counts_every_client_but_only_this_user(
    http: httpx.AsyncClient, db: asyncpg.Connection, make_client: Any, alice: User
) -> None:
    one: RegisteredClient = await make_client()
    two: RegisteredClient = await make_client()
    await factories.create_user(db, subject="bob", email="bob@example.com")
    await start_auth_req_id(http, one.basic_auth())
    await start_auth_req_id(http, two.basic_auth())
    await start_auth_req_id(http, one.basic_auth())
    assert error_of(await start_request(http, two.basic_auth()))[0] == 403
    bob = await start_request(http, one.basic_auth(), login_hint="bob@example.com")
    assert bob.status_code == 200


async def test_the_window_cap_refuses_too_many_requests_in_ten_minutes(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    for _ in range(10):
        await decide(db, await start_auth_req_id(http, rp.basic_auth()), "denied")
    refused = await start_request(http, rp.basic_auth())
    assert error_of(refused)[:2] == (403, "access_denied")
    assert "too many requests for this user" in error_of(refused)[2]
    [row] = await audit_events(db, "fatigue_refused")
    assert row["detail"]["cap"] == "window"
    assert (row["detail"]["limit"], row["detail"]["window"]) == (10, 600)
    # Requests older than the window no longer count.
    await db.execute("UPDATE auth_requests SET created_at = created_at - interval '601 seconds'")
    assert (await start_request(http, rp.basic_auth())).status_code == 200


async def test_not_me_mutes_the_users_prompts_from_every_client(
    http: httpx.AsyncClient,
    db: asyncpg.Connection,
    rp: RegisteredClient,
    make_client: Any,
    alice: User,
) -> None:
    other: RegisteredClient = await make_client()
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    await not_me(db, auth_req_id)
    assert error_of(await poll(http, rp.basic_auth(), auth_req_id))[1] == "access_denied"

    for client in (rp, other):
        refused = await start_request(http, client.basic_auth())
        assert error_of(refused)[:2] == (403, "access_denied")
    assert await db.fetchval("SELECT count(*) FROM auth_requests") == 1
    [reported] = await audit_events(db, "user_reported_not_me")
    [muted] = await audit_events(db, "prompts_muted")
    assert reported["auth_request_id"] == muted["auth_request_id"] is not None
    assert (muted["client_id"], muted["user_id"]) == (rp.client_id, alice.user_id)
    assert muted["detail"]["seconds"] == 1800
    refusals = await audit_events(db, "prompt_muted_refused")
    assert [r["client_id"] for r in refusals] == [rp.client_id, other.client_id]
    assert refusals[0]["detail"]["muted_until"] == muted["detail"]["until"]

    await db.execute("UPDATE user_prompt_mutes SET until = now() - interval '1 second'")
    assert (await start_request(http, rp.basic_auth())).status_code == 200


async def test_an_ordinary_denial_mutes_nothing(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    await decide(db, await start_auth_req_id(http, rp.basic_auth()), "denied")
    assert (await start_request(http, rp.basic_auth())).status_code == 200
    assert await audit_events(db, "prompts_muted") == []


@pytest.fixture
async def second(settings: Settings) -> AsyncIterator[RunningApp]:
    async for app in start_app(settings):
        yield app


async def reporters(db: asyncpg.Connection, count: int) -> list[User]:
    return [
        await factories.create_user(db, subject=f"reporter-{n}", email=f"r{n}@example.com")
        for n in range(count)
    ]


async def until_refused(http: httpx.AsyncClient, rp: RegisteredClient, hint: str) -> httpx.Response:
    """Retry until the client is refused: the suspension reaches replicas by notification."""
    for _ in range(200):
        response = await start_request(http, rp.basic_auth(), login_hint=hint)
        if response.status_code == 401:
            return response
        await asyncio.sleep(0.01)
    raise AssertionError(f"the client was never refused: {response.status_code} {response.text}")


async def test_a_client_reported_by_three_users_is_suspended_on_every_instance(
    running: RunningApp, second: RunningApp, db: asyncpg.Connection, rp: RegisteredClient
) -> None:
    users = await reporters(db, 4)
    ids = [
        await start_auth_req_id(running.http, rp.basic_auth(), login_hint=f"r{n}@example.com")
        for n in range(4)
    ]
    await start_request(second.http, rp.basic_auth(), login_hint="r3@example.com")  # cached there
    await not_me(db, ids[0])
    await not_me(db, ids[1])
    assert await db.fetchval("SELECT disabled_at FROM clients") is None
    await not_me(db, ids[2])
    assert await db.fetchval("SELECT disabled_at FROM clients") is not None

    for app in (running, second):
        refused = await until_refused(app.http, rp, "r3@example.com")
        assert refused.json()["error"] == "invalid_client"
        assert error_of(await poll(app.http, rp.basic_auth(), ids[3]))[:2] == (
            401,
            "invalid_client",
        )
    [row] = await audit_events(db, "client_suspended")
    assert row["client_id"] == rp.client_id
    assert row["detail"] == {
        "reason": "not_me_reports",
        "reporters": 3,
        "threshold": 3,
        "window": 86400,
    }
    assert {r["user_id"] for r in await audit_events(db, "user_reported_not_me")} == {
        u.user_id for u in users[:3]
    }


async def test_one_user_reporting_again_and_again_does_not_suspend_a_client(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    no_mute = NotMeLimits(mute_seconds=0, suspend_after=3, suspend_window=86400)
    for _ in range(4):
        await not_me(db, await start_auth_req_id(http, rp.basic_auth()), no_mute)
    assert await db.fetchval("SELECT disabled_at FROM clients") is None
    assert await audit_events(db, "prompts_muted") == []


async def test_a_re_enabled_client_starts_counting_afresh(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient
) -> None:
    await reporters(db, 4)
    ids = [
        await start_auth_req_id(http, rp.basic_auth(), login_hint=f"r{n}@example.com")
        for n in range(3)
    ]
    for auth_req_id in ids:
        await not_me(db, auth_req_id)
    assert await db.fetchval("SELECT disabled_at FROM clients") is not None
    await set_client_disabled(db, rp.client_id, False)
    # The suspension ended the client's open requests (revoke_client): start a new one.
    await not_me(db, await start_auth_req_id(http, rp.basic_auth(), login_hint="r3@example.com"))
    assert await db.fetchval("SELECT disabled_at FROM clients") is None


async def test_suspension_is_off_with_a_threshold_of_zero(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient
) -> None:
    await reporters(db, 3)
    off = NotMeLimits(mute_seconds=1800, suspend_after=0, suspend_window=86400)
    for n in range(3):
        auth_req_id = await start_auth_req_id(http, rp.basic_auth(), login_hint=f"r{n}@example.com")
        await not_me(db, auth_req_id, off)
    assert await db.fetchval("SELECT disabled_at FROM clients") is None
    assert len(await audit_events(db, "prompts_muted")) == 3


async def test_concurrent_reports_are_counted_exactly(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient
) -> None:
    await reporters(db, 3)
    ids = [
        await start_auth_req_id(running.http, rp.basic_auth(), login_hint=f"r{n}@example.com")
        for n in range(3)
    ]

    async def report(auth_req_id: str) -> None:
        async with running.services.pool.acquire() as conn:
            await not_me(conn, auth_req_id)  # type: ignore[arg-type]

    await asyncio.gather(*(report(i) for i in ids))
    assert await db.fetchval("SELECT disabled_at FROM clients") is not None
    assert len(await audit_events(db, "client_suspended")) == 1
