"""User codes: argon2id at rest, wrong codes audited, a user's code locked, a client limited."""

from __future__ import annotations

import hashlib
from typing import Any

import asyncpg
import httpx
import pytest

from backchannel.db.users import User
from backchannel.oauth.user_codes import hash_user_code
from backchannel.settings import Settings
from tests.conftest import RegisteredClient, start_app
from tests.support import factories
from tests.support.ciba import audit_events, start_request


@pytest.fixture
async def coded(make_client: Any, db: asyncpg.Connection, alice: User) -> RegisteredClient:
    await db.execute("UPDATE users SET user_code_hash = $1", hash_user_code("4711"))
    client: RegisteredClient = await make_client(backchannel_user_code_parameter=True)
    return client


async def ask(http: httpx.AsyncClient, rp: RegisteredClient, code: str, **params: Any) -> str:
    response = await start_request(http, rp.basic_auth(), user_code=code, **params)
    return "ok" if response.status_code == 200 else str(response.json()["error"])


def test_a_user_code_is_stored_as_argon2id_with_the_owasp_minimum() -> None:
    stored = hash_user_code("4711")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert "4711" not in stored
    assert hash_user_code("4711") != stored  # salted


async def test_a_wrong_code_is_refused_and_audited(
    http: httpx.AsyncClient, coded: RegisteredClient, db: asyncpg.Connection
) -> None:
    assert await ask(http, coded, "0000") == "invalid_user_code"
    [event] = await audit_events(db, "user_code_rejected")
    assert event["client_id"] == coded.client_id and event["detail"]["failures"] == 1
    assert await ask(http, coded, "4711") == "ok"


async def test_repeated_wrong_codes_lock_the_users_code_even_against_the_right_one(
    settings: Settings, coded: RegisteredClient, db: asyncpg.Connection
) -> None:
    async for app in start_app(settings.replace(user_code_max_failures=3, fatigue_max_pending=0)):
        answers = [await ask(app.http, coded, code) for code in ("1", "2", "3", "4711")]
        assert answers == ["invalid_user_code"] * 4
        assert len(await audit_events(db, "user_code_locked")) == 1
        # The lock passes; the right code works again and the count starts afresh.
        await db.execute("UPDATE users SET user_code_locked_until = now() - interval '1 s'")
        assert await ask(app.http, coded, "4711") == "ok"
        assert await db.fetchval("SELECT count(*) FROM user_code_failures") == 0


async def test_a_client_guessing_across_users_is_refused(
    settings: Settings, coded: RegisteredClient, db: asyncpg.Connection
) -> None:
    for n in range(4):
        await factories.create_user(db, email=f"user{n}@example.com")
    await db.execute("UPDATE users SET user_code_hash = $1", hash_user_code("4711"))
    async for app in start_app(settings.replace(user_code_client_max_failures=3)):
        for n in range(3):
            answer = await ask(app.http, coded, "0000", login_hint=f"user{n}@example.com")
            assert answer == "invalid_user_code"
        answer = await ask(app.http, coded, "4711", login_hint="user3@example.com")
        assert answer == "access_denied"


async def test_a_code_stored_as_plain_sha256_still_works_and_is_rehashed(
    http: httpx.AsyncClient, coded: RegisteredClient, db: asyncpg.Connection
) -> None:
    legacy = "sha256:" + hashlib.sha256(b"4711").hexdigest()
    await db.execute("UPDATE users SET user_code_hash = $1", legacy)
    assert await ask(http, coded, "0000") == "invalid_user_code"
    assert await ask(http, coded, "4711") == "ok"
    stored = await db.fetchval("SELECT user_code_hash FROM users")
    assert stored.startswith("$argon2id$")
