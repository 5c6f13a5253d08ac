"""POST /introspect (RFC 7662): a client introspects the tokens issued to itself."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import httpx

from backchannel.db.users import User
from backchannel.oauth.secrets import hash_secret
from backchannel.oauth.services import Services
from tests.conftest import ISSUER, RegisteredClient
from tests.support.tokens import issue_tokens_for

INACTIVE = {"active": False}


issue = issue_tokens_for


async def introspect(
    http: httpx.AsyncClient, client: RegisteredClient, token: str, **extra: str
) -> dict[str, Any]:
    response = await http.post(
        "/introspect", data={"token": token, **extra}, headers=client.basic_auth()
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    return body


async def test_an_active_access_token_is_described(
    services: Services, http: httpx.AsyncClient, rp: RegisteredClient, alice: User
) -> None:
    issued = await issue(services, rp, alice)
    body = await introspect(http, rp, issued["access_token"])
    assert body["active"] is True
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "openid email"
    assert body["client_id"] == rp.client_id
    assert body["sub"] == "alice"
    assert body["iss"] == ISSUER and body["aud"] == ISSUER
    assert body["exp"] - body["iat"] == services.settings.access_token_ttl
    assert abs(body["iat"] - time.time()) < 5
    assert isinstance(body["jti"], str) and body["jti"]


async def test_an_active_refresh_token_is_described(
    services: Services, http: httpx.AsyncClient, rp: RegisteredClient, alice: User
) -> None:
    issued = await issue(services, rp, alice)
    body = await introspect(http, rp, issued["refresh_token"], token_type_hint="refresh_token")
    assert body["active"] is True
    assert body["client_id"] == rp.client_id and body["sub"] == "alice"
    assert body["scope"] == "openid email"
    assert body["exp"] - body["iat"] == services.settings.refresh_token_ttl
    assert "token_type" not in body
    # The hint only orders the search.
    assert (await introspect(http, rp, issued["access_token"], token_type_hint="refresh_token"))[
        "active"
    ]


async def test_another_clients_tokens_are_inactive(
    services: Services,
    http: httpx.AsyncClient,
    rp: RegisteredClient,
    make_client: Any,
    alice: User,
) -> None:
    other: RegisteredClient = await make_client()
    issued = await issue(services, rp, alice)
    for token in (issued["access_token"], issued["refresh_token"], issued["id_token"]):
        assert await introspect(http, other, token) == INACTIVE


async def test_spent_revoked_and_expired_tokens_are_inactive(
    services: Services,
    http: httpx.AsyncClient,
    rp: RegisteredClient,
    alice: User,
    db: asyncpg.Connection,
) -> None:
    rotated = await issue(services, rp, alice)
    response = await http.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": rotated["refresh_token"]},
        headers=rp.basic_auth(),
    )
    assert response.status_code == 200
    assert await introspect(http, rp, rotated["refresh_token"]) == INACTIVE
    assert (await introspect(http, rp, rotated["access_token"]))["active"] is True

    revoked = await issue(services, rp, alice)
    await http.post("/revoke", data={"token": revoked["refresh_token"]}, headers=rp.basic_auth())
    assert await introspect(http, rp, revoked["refresh_token"]) == INACTIVE
    assert await introspect(http, rp, revoked["access_token"]) == INACTIVE

    expired = await issue(services, rp, alice)
    await db.execute(
        "UPDATE refresh_tokens SET expires_at = now() - interval '1 second' WHERE token_hash = $1",
        hash_secret(expired["refresh_token"]),
    )
    await db.execute("UPDATE access_tokens SET expires_at = now() - interval '1 second'")
    assert await introspect(http, rp, expired["refresh_token"]) == INACTIVE
    assert await introspect(http, rp, expired["access_token"]) == INACTIVE


async def test_tokens_of_a_disabled_user_are_inactive(
    services: Services,
    http: httpx.AsyncClient,
    rp: RegisteredClient,
    alice: User,
    db: asyncpg.Connection,
) -> None:
    issued = await issue(services, rp, alice)
    await db.execute("UPDATE users SET disabled_at = now() WHERE user_id = $1", alice.user_id)
    assert await introspect(http, rp, issued["access_token"]) == INACTIVE
    assert await introspect(http, rp, issued["refresh_token"]) == INACTIVE


async def test_garbage_tokens_are_inactive(http: httpx.AsyncClient, rp: RegisteredClient) -> None:
    for token in ("x", "a.b.c", "e30.e30.", "🙂" * 100, "x" * 10000):
        assert await introspect(http, rp, token) == INACTIVE


async def test_bad_requests_are_client_errors(
    http: httpx.AsyncClient, rp: RegisteredClient
) -> None:
    missing = await http.post("/introspect", data={}, headers=rp.basic_auth())
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    as_json = await http.post("/introspect", json={"token": "x"}, headers=rp.basic_auth())
    assert as_json.status_code == 400 and as_json.json()["error"] == "invalid_request"
    anonymous = await http.post("/introspect", data={"token": "x"})
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "invalid_client"
    bearer = await http.post(
        "/introspect", data={"token": "x"}, headers={"Authorization": "Bearer x"}
    )
    assert bearer.status_code == 401
    assert (await http.get("/introspect")).status_code == 405
