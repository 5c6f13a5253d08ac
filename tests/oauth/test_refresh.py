"""The refresh_token grant: rotation, one winner under concurrency, reuse detection."""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from joserfc import jwk, jwt

from backchannel.db.users import User
from backchannel.errors import InvalidGrant
from backchannel.oauth.refresh import refresh_grant
from backchannel.oauth.secrets import hash_secret
from backchannel.oauth.services import Services
from tests.conftest import RegisteredClient
from tests.support.tokens import issue_tokens_for
from tests.support.waiting import eventually

CIBA = "urn:openid:params:grant-type:ciba"
AUTH_TIME = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


issue = functools.partial(issue_tokens_for, auth_time=AUTH_TIME)


async def refresh(
    http: httpx.AsyncClient, client: RegisteredClient, token: str, **extra: str
) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": token, **extra}
    return await http.post("/token", data=form, headers=client.basic_auth())


def error_of(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    error: str = response.json()["error"]
    return error


async def test_refresh_rotates_the_token_within_its_family(
    services: Services,
    http: httpx.AsyncClient,
    rp: RegisteredClient,
    alice: User,
    db: asyncpg.Connection,
) -> None:
    first = await issue(services, rp, alice)
    response = await refresh(http, rp, first["refresh_token"])
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["refresh_token"] != first["refresh_token"]
    assert body["scope"] == "openid email"
    keys = jwk.KeySet.import_key_set((await http.get("/jwks")).json())
    claims = jwt.decode(body["id_token"], keys).claims
    assert claims["auth_time"] == int(AUTH_TIME.timestamp())
    assert claims["sub"] == "alice"

    old = await db.fetchrow(
        "SELECT * FROM refresh_tokens WHERE token_hash = $1", hash_secret(first["refresh_token"])
    )
    new = await db.fetchrow(
        "SELECT * FROM refresh_tokens WHERE token_hash = $1", hash_secret(body["refresh_token"])
    )
    assert old["rotated_at"] is not None and new["rotated_at"] is None
    assert old["family_id"] == new["family_id"]
    assert new["auth_time"] == AUTH_TIME
    grants = [
        r["detail"]["grant"]
        for r in await db.fetch("SELECT detail FROM audit_events WHERE event = 'token_issued'")
    ]
    assert grants == ["ciba", "refresh_token"]


async def test_replaying_a_rotated_token_revokes_the_whole_family(
    services: Services,
    http: httpx.AsyncClient,
    rp: RegisteredClient,
    alice: User,
    db: asyncpg.Connection,
) -> None:
    first = await issue(services, rp, alice)
    second = (await refresh(http, rp, first["refresh_token"])).json()

    assert error_of(await refresh(http, rp, first["refresh_token"])) == "invalid_grant"
    assert error_of(await refresh(http, rp, second["refresh_token"])) == "invalid_grant"
    assert await db.fetchval("SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL") == 0
    assert await db.fetchval("SELECT count(*) FROM access_tokens WHERE revoked_at IS NULL") == 0
    [event] = await db.fetch("SELECT * FROM audit_events WHERE event = 'refresh_token_reuse'")
    assert event["client_id"] == rp.client_id and event["user_id"] == alice.user_id
    assert event["detail"]["refresh_tokens_revoked"] == 2
    assert event["detail"]["access_tokens_revoked"] == 2
    # A further replay finds the family already revoked: no second reuse event.
    assert error_of(await refresh(http, rp, first["refresh_token"])) == "invalid_grant"
    assert (
        await db.fetchval("SELECT count(*) FROM audit_events WHERE event = 'refresh_token_reuse'")
        == 1
    )


async def test_concurrent_refreshes_with_one_token_have_exactly_one_winner(
    services: Services, rp: RegisteredClient, alice: User, db: asyncpg.Connection
) -> None:
    first = await issue(services, rp, alice)
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    results = await asyncio.gather(
        *(refresh_grant(services, rp.client, form) for _ in range(5)), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, dict)]
    losers = [r for r in results if not isinstance(r, dict)]
    assert len(winners) == 1
    assert len(losers) == 4 and all(isinstance(r, InvalidGrant) for r in losers)
    assert await db.fetchval("SELECT count(*) FROM refresh_tokens") == 2
    # The losers presented a token already spent: a replay, so the family is revoked.
    assert await db.fetchval("SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL") == 0
    with pytest.raises(InvalidGrant):
        await refresh_grant(services, rp.client, {"refresh_token": winners[0]["refresh_token"]})


async def test_scope_may_narrow_but_the_refresh_token_keeps_the_grants_scope(
    services: Services, http: httpx.AsyncClient, rp: RegisteredClient, alice: User
) -> None:
    first = await issue(services, rp, alice, "openid email profile")
    widened = await refresh(http, rp, first["refresh_token"], scope="openid phone")
    assert error_of(widened) == "invalid_scope"
    narrowed = await refresh(http, rp, first["refresh_token"], scope="openid")
    assert narrowed.status_code == 200, narrowed.text
    assert narrowed.json()["scope"] == "openid"
    again = await refresh(http, rp, narrowed.json()["refresh_token"])
    assert again.json()["scope"] == "openid email profile"


async def test_unknown_expired_and_revoked_tokens_are_invalid_grants(
    services: Services,
    http: httpx.AsyncClient,
    rp: RegisteredClient,
    alice: User,
    db: asyncpg.Connection,
) -> None:
    assert error_of(await refresh(http, rp, "no-such-token")) == "invalid_grant"
    expired = (await issue(services, rp, alice))["refresh_token"]
    await db.execute(
        "UPDATE refresh_tokens SET expires_at = now() - interval '1 second' WHERE token_hash = $1",
        hash_secret(expired),
    )
    assert error_of(await refresh(http, rp, expired)) == "invalid_grant"
    revoked = (await issue(services, rp, alice))["refresh_token"]
    await db.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE token_hash = $1", hash_secret(revoked)
    )
    refused = await refresh(http, rp, revoked)
    assert error_of(refused) == "invalid_grant"
    # Not taken for a replay: nothing else is revoked, and the answer says what it is.
    assert refused.json()["error_description"] == "the refresh token is invalid, expired or revoked"
    assert await db.fetchval("SELECT count(*) FROM audit_events WHERE event <> 'token_issued'") == 0


async def test_another_clients_token_is_refused_and_left_usable(
    services: Services,
    http: httpx.AsyncClient,
    rp: RegisteredClient,
    make_client: Any,
    alice: User,
) -> None:
    other: RegisteredClient = await make_client()
    token = (await issue(services, rp, alice))["refresh_token"]
    assert error_of(await refresh(http, other, token)) == "invalid_grant"
    assert (await refresh(http, rp, token)).status_code == 200


async def test_disabled_user_cannot_refresh(
    services: Services,
    http: httpx.AsyncClient,
    rp: RegisteredClient,
    alice: User,
    db: asyncpg.Connection,
) -> None:
    token = (await issue(services, rp, alice))["refresh_token"]
    await db.execute("UPDATE users SET disabled_at = now() WHERE user_id = $1", alice.user_id)
    assert error_of(await refresh(http, rp, token)) == "invalid_grant"


async def test_client_without_the_refresh_grant_is_unauthorized(
    services: Services,
    http: httpx.AsyncClient,
    rp: RegisteredClient,
    make_client: Any,
    alice: User,
) -> None:
    ciba_only: RegisteredClient = await make_client(grant_types=(CIBA,))
    token = (await issue(services, rp, alice))["refresh_token"]
    assert error_of(await refresh(http, ciba_only, token)) == "unauthorized_client"


async def test_missing_refresh_token_is_an_invalid_request(
    http: httpx.AsyncClient, rp: RegisteredClient
) -> None:
    response = await http.post(
        "/token", data={"grant_type": "refresh_token"}, headers=rp.basic_auth()
    )
    assert error_of(response) == "invalid_request"


async def test_refreshed_id_token_keeps_the_original_auth_time_after_many_rotations(
    services: Services, http: httpx.AsyncClient, rp: RegisteredClient, alice: User
) -> None:
    token = (await issue(services, rp, alice))["refresh_token"]
    for _ in range(3):
        body = (await refresh(http, rp, token)).json()
        token = body["refresh_token"]
    claims = jwt.decode(body["id_token"], services.keys.public_keyset()).claims
    assert claims["auth_time"] == int(AUTH_TIME.timestamp())
    assert claims["iat"] > claims["auth_time"]


async def test_a_refresh_token_family_ends_max_age_after_the_users_approval(
    services: Services,
    http: httpx.AsyncClient,
    rp: RegisteredClient,
    alice: User,
    db: asyncpg.Connection,
) -> None:
    max_age = services.settings.refresh_token_max_age
    almost_over = datetime.now(UTC) - timedelta(seconds=max_age - 2)
    first = await issue_tokens_for(services, rp, alice, auth_time=almost_over)
    expiry = await db.fetchval(
        "SELECT expires_at FROM refresh_tokens WHERE token_hash = $1",
        hash_secret(first["refresh_token"]),
    )
    assert expiry == almost_over + timedelta(seconds=max_age)  # not now + refresh_token_ttl
    rotated = await refresh(http, rp, first["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()["refresh_token"]
    assert await db.fetchval(
        "SELECT expires_at FROM refresh_tokens WHERE token_hash = $1", hash_secret(second)
    ) == almost_over + timedelta(seconds=max_age)

    family_end = almost_over + timedelta(seconds=max_age)

    async def family_ended() -> bool:  # by the database's clock, which decides
        return bool(await db.fetchval("SELECT now() >= $1", family_end))

    await eventually(family_ended, within=10)
    assert error_of(await refresh(http, rp, second)) == "invalid_grant"


async def test_a_fresh_approval_gets_the_full_sliding_refresh_lifetime(
    services: Services, rp: RegisteredClient, alice: User, db: asyncpg.Connection
) -> None:
    tokens = await issue_tokens_for(services, rp, alice)
    lifetime = await db.fetchval(
        "SELECT expires_at - created_at FROM refresh_tokens WHERE token_hash = $1",
        hash_secret(tokens["refresh_token"]),
    )
    assert lifetime == timedelta(seconds=services.settings.refresh_token_ttl)


async def test_concurrent_replays_and_revocations_of_one_family_never_deadlock(
    services: Services, http: httpx.AsyncClient, rp: RegisteredClient, alice: User
) -> None:
    """Rotation, reuse revocation and RFC 7009 revocation all lock the family first."""
    statuses: list[int] = []
    for _ in range(25):
        spent = (await issue(services, rp, alice))["refresh_token"]
        current = (await refresh(http, rp, spent)).json()["refresh_token"]
        calls = [refresh(http, rp, spent) for _ in range(6)]
        calls += [refresh(http, rp, current) for _ in range(3)]
        calls.append(http.post("/revoke", data={"token": current}, headers=rp.basic_auth()))
        statuses += [r.status_code for r in await asyncio.gather(*calls)]
    assert set(statuses) <= {200, 400}, statuses


async def test_a_refreshed_id_token_keeps_the_methods_of_the_original_approval(
    services: Services,
    http: httpx.AsyncClient,
    rp: RegisteredClient,
    alice: User,
    db: asyncpg.Connection,
) -> None:
    from tests.support.ciba import decide, poll, start_auth_req_id

    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    from backchannel.oauth.assurance import ACR_SCA

    # Held to strong authentication, approved with user verification.
    await db.execute("UPDATE auth_requests SET acr = $1, amr = $2", ACR_SCA, ["hwk", "user"])
    await decide(db, auth_req_id, "approved")
    tokens = (await poll(http, rp.basic_auth(), auth_req_id)).json()
    first = jwt.decode(tokens["id_token"], services.keys.public_keyset()).claims
    body = (await refresh(http, rp, tokens["refresh_token"])).json()
    claims = jwt.decode(body["id_token"], services.keys.public_keyset()).claims
    assert claims["amr"] == ["hwk", "user"]
    assert claims["acr"] == first["acr"] == ACR_SCA
    # The new access token still belongs to the request (central revocation finds it).
    request_ids = await db.fetch("SELECT auth_request_id FROM access_tokens ORDER BY jti")
    request_id = await db.fetchval("SELECT id FROM auth_requests")
    assert [r["auth_request_id"] for r in request_ids] == [request_id, request_id]
    # Replaying the spent token is audited against the request and the family.
    replayed = await refresh(http, rp, tokens["refresh_token"])
    assert error_of(replayed) == "invalid_grant"
    assert replayed.json()["error_description"] == (
        "the refresh token was already used; the grant is revoked"
    )
    [reuse] = await db.fetch("SELECT * FROM audit_events WHERE event = 'refresh_token_reuse'")
    family = await db.fetchval("SELECT DISTINCT family_id FROM refresh_tokens")
    assert reuse["auth_request_id"] == request_id
    assert reuse["detail"]["family_id"] == str(family)


async def test_each_refused_refresh_says_why(
    services: Services,
    http: httpx.AsyncClient,
    rp: RegisteredClient,
    make_client: Any,
    alice: User,
) -> None:
    def description(response: httpx.Response) -> str:
        text: str = response.json()["error_description"]
        return text

    token = (await issue(services, rp, alice, "openid email"))["refresh_token"]
    unknown = await refresh(http, rp, "no-such-token")
    assert description(unknown) == "the refresh token is invalid, expired or revoked"
    assert description(await refresh(http, rp, token, scope=" ")) == "scope is empty"
    assert (
        description(await refresh(http, rp, token, scope="openid phone"))
        == "scope may only narrow the original grant"
    )
    assert description(await refresh(http, rp, token, scope="email")) == (
        "scope must contain openid"
    )
    missing = await http.post(
        "/token", data={"grant_type": "refresh_token"}, headers=rp.basic_auth()
    )
    assert description(missing) == "refresh_token is required"
    ciba_only: RegisteredClient = await make_client(grant_types=(CIBA,))
    assert (
        description(await refresh(http, ciba_only, token))
        == "the client may not use the refresh_token grant"
    )
