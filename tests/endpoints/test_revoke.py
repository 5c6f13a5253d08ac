"""POST /revoke (RFC 7009) and the bulk revocation used by governance."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx

from backchannel.db.users import User
from backchannel.oauth.services import Services
from backchannel.oauth.token_revocation import revoke_for_client, revoke_for_user
from tests.conftest import RegisteredClient
from tests.support import factories
from tests.support.tokens import issue_tokens_for

issue = issue_tokens_for


async def revoke(
    http: httpx.AsyncClient, client: RegisteredClient, token: str, **extra: str
) -> httpx.Response:
    return await http.post("/revoke", data={"token": token, **extra}, headers=client.basic_auth())


async def refresh(http: httpx.AsyncClient, client: RegisteredClient, token: str) -> int:
    response = await http.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": token},
        headers=client.basic_auth(),
    )
    return response.status_code


async def userinfo(http: httpx.AsyncClient, token: str) -> int:
    response = await http.get("/userinfo", headers={"Authorization": f"Bearer {token}"})
    return response.status_code


async def test_revoking_a_refresh_token_revokes_its_whole_family(
    services: Services,
    http: httpx.AsyncClient,
    rp: RegisteredClient,
    alice: User,
    db: asyncpg.Connection,
) -> None:
    first = await issue(services, rp, alice)
    second = (
        await http.post(
            "/token",
            data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
            headers=rp.basic_auth(),
        )
    ).json()
    response = await revoke(http, rp, second["refresh_token"], token_type_hint="refresh_token")
    assert response.status_code == 200
    assert response.content == b""
    assert await refresh(http, rp, second["refresh_token"]) == 400
    assert await userinfo(http, first["access_token"]) == 401
    assert await userinfo(http, second["access_token"]) == 401
    [event] = await db.fetch("SELECT * FROM audit_events WHERE event = 'token_revoked'")
    assert event["detail"]["token_type"] == "refresh_token"
    assert event["detail"]["access_tokens"] == 2


async def test_revoking_an_access_token_leaves_the_refresh_token_usable(
    services: Services, http: httpx.AsyncClient, rp: RegisteredClient, alice: User
) -> None:
    issued = await issue(services, rp, alice)
    assert await userinfo(http, issued["access_token"]) == 200
    assert (await revoke(http, rp, issued["access_token"])).status_code == 200
    assert await userinfo(http, issued["access_token"]) == 401
    assert await refresh(http, rp, issued["refresh_token"]) == 200


async def test_a_wrong_hint_only_changes_the_search_order(
    services: Services, http: httpx.AsyncClient, rp: RegisteredClient, alice: User
) -> None:
    issued = await issue(services, rp, alice)
    response = await revoke(http, rp, issued["refresh_token"], token_type_hint="access_token")
    assert response.status_code == 200
    assert await refresh(http, rp, issued["refresh_token"]) == 400
    other = await issue(services, rp, alice)
    response = await revoke(http, rp, other["access_token"], token_type_hint="no_such_type")
    assert response.status_code == 200
    assert await userinfo(http, other["access_token"]) == 401


async def test_unknown_tokens_and_other_clients_tokens_succeed_silently(
    services: Services,
    http: httpx.AsyncClient,
    rp: RegisteredClient,
    make_client: Any,
    alice: User,
    db: asyncpg.Connection,
) -> None:
    other: RegisteredClient = await make_client()
    issued = await issue(services, rp, alice)
    for token in ("unknown", issued["refresh_token"], issued["access_token"], issued["id_token"]):
        response = await revoke(http, other, token)
        assert response.status_code == 200
    assert await userinfo(http, issued["access_token"]) == 200
    assert await refresh(http, rp, issued["refresh_token"]) == 200
    assert await db.fetchval("SELECT count(*) FROM audit_events WHERE event = 'token_revoked'") == 0


async def test_revoking_twice_is_harmless(
    services: Services,
    http: httpx.AsyncClient,
    rp: RegisteredClient,
    alice: User,
    db: asyncpg.Connection,
) -> None:
    issued = await issue(services, rp, alice)
    for _ in range(2):
        assert (await revoke(http, rp, issued["refresh_token"])).status_code == 200
        assert (await revoke(http, rp, issued["access_token"])).status_code == 200
    assert await db.fetchval("SELECT count(*) FROM audit_events WHERE event = 'token_revoked'") == 1


async def test_bad_requests_are_client_errors(
    http: httpx.AsyncClient, rp: RegisteredClient
) -> None:
    missing = await http.post("/revoke", data={}, headers=rp.basic_auth())
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    as_json = await http.post("/revoke", json={"token": "x"}, headers=rp.basic_auth())
    assert as_json.status_code == 400 and as_json.json()["error"] == "invalid_request"
    anonymous = await http.post("/revoke", data={"token": "x"})
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "invalid_client"
    wrong_secret = await http.post(
        "/revoke", data={"token": "x"}, auth=httpx.BasicAuth(rp.client_id, "wrong")
    )
    assert wrong_secret.status_code == 401
    assert wrong_secret.headers["www-authenticate"].startswith("Basic")
    assert (await http.get("/revoke")).status_code == 405


async def test_revoke_for_user_ends_every_live_token_of_that_user_only(
    services: Services,
    http: httpx.AsyncClient,
    rp: RegisteredClient,
    make_client: Any,
    alice: User,
    db: asyncpg.Connection,
) -> None:
    other_client: RegisteredClient = await make_client()
    bob = await factories.create_user(db, subject="bob", email="bob@example.com")
    alices = [await issue(services, rp, alice), await issue(services, other_client, alice)]
    bobs = await issue(services, rp, bob)
    revoked = await revoke_for_user(db, alice.user_id)
    assert (revoked.refresh_tokens, revoked.access_tokens) == (2, 2)
    for issued, client in zip(alices, (rp, other_client), strict=True):
        assert await userinfo(http, issued["access_token"]) == 401
        assert await refresh(http, client, issued["refresh_token"]) == 400
    assert await userinfo(http, bobs["access_token"]) == 200
    [event] = await db.fetch("SELECT * FROM audit_events WHERE event = 'token_revoked'")
    assert event["user_id"] == alice.user_id and event["detail"]["scope"] == "user"


async def test_revoke_for_client_ends_every_live_token_of_that_client_only(
    services: Services,
    http: httpx.AsyncClient,
    rp: RegisteredClient,
    make_client: Any,
    alice: User,
    db: asyncpg.Connection,
) -> None:
    other_client: RegisteredClient = await make_client()
    mine = await issue(services, rp, alice)
    theirs = await issue(services, other_client, alice)
    revoked = await revoke_for_client(db, rp.client_id)
    assert revoked.total == 2
    assert await userinfo(http, mine["access_token"]) == 401
    assert await userinfo(http, theirs["access_token"]) == 200
    assert (await revoke_for_client(db, rp.client_id)).total == 0
