"""Token issuance: the token response, RFC 9068 access tokens, ID tokens, stored rows."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from joserfc import jwk, jwt

from backchannel.db.users import User
from backchannel.errors import InvalidRequest
from backchannel.oauth.access_tokens import read_access_token
from backchannel.oauth.id_tokens import sign_id_token, verify_own_id_token
from backchannel.oauth.secrets import hash_secret
from backchannel.oauth.services import Services
from backchannel.oauth.token_issuance import Grant, issue_tokens
from tests.conftest import ISSUER, RegisteredClient

CIBA = "urn:openid:params:grant-type:ciba"
AUTH_REQ_ID_CLAIM = "urn:openid:params:jwt:claim:auth_req_id"
RT_HASH_CLAIM = "urn:openid:params:jwt:claim:rt_hash"


async def issue(
    services: Services, client: RegisteredClient, user: User, **overrides: Any
) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "client": client.client,
        "user_id": user.user_id,
        "subject": user.subject,
        "scope": ("openid", "email"),
        "auth_time": datetime.now(UTC) - timedelta(seconds=30),
        **overrides,
    }
    async with services.pool.acquire() as conn, conn.transaction():
        return await issue_tokens(services, conn, Grant(**arguments))


def half_hash(value: str) -> str:
    digest = hashlib.sha256(value.encode()).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


async def published_keys(http: httpx.AsyncClient) -> jwk.KeySet:
    return jwk.KeySet.import_key_set((await http.get("/jwks")).json())


async def test_token_response_has_the_rfc6749_shape(
    services: Services, rp: RegisteredClient, alice: User
) -> None:
    body = await issue(services, rp, alice, scope=("openid", "email", "openid"))
    assert set(body) == {
        "access_token",
        "token_type",
        "expires_in",
        "id_token",
        "refresh_token",
        "scope",
    }
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == services.settings.access_token_ttl
    assert body["scope"] == "openid email"


async def test_access_token_is_an_rfc9068_jwt_recorded_by_jti(
    services: Services,
    rp: RegisteredClient,
    alice: User,
    db: asyncpg.Connection,
    http: httpx.AsyncClient,
) -> None:
    auth_time = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    body = await issue(services, rp, alice, auth_time=auth_time, acr="urn:example:mfa")
    token = jwt.decode(body["access_token"], await published_keys(http), algorithms=["ES256"])
    assert token.header["typ"] == "at+jwt"
    assert token.header["alg"] == "ES256"
    assert token.header["kid"] == services.keys.signing_key("ES256").kid
    claims = token.claims
    assert claims["iss"] == ISSUER
    assert claims["aud"] == ISSUER
    assert claims["sub"] == "alice"
    assert claims["client_id"] == rp.client_id
    assert claims["scope"] == "openid email"
    assert claims["auth_time"] == int(auth_time.timestamp())
    assert claims["acr"] == "urn:example:mfa"
    assert claims["exp"] - claims["iat"] == services.settings.access_token_ttl
    assert abs(claims["iat"] - time.time()) < 5
    row = await db.fetchrow("SELECT * FROM access_tokens WHERE jti = $1", claims["jti"])
    assert row is not None
    assert row["client_id"] == rp.client_id and row["user_id"] == alice.user_id
    assert list(row["scope"]) == ["openid", "email"]
    assert int(row["expires_at"].timestamp()) == claims["exp"]


@pytest.mark.parametrize("alg", ["ES256", "PS256", "RS256"])
async def test_id_token_is_signed_with_the_clients_algorithm(
    alg: str, services: Services, make_client: Any, alice: User, http: httpx.AsyncClient
) -> None:
    client: RegisteredClient = await make_client(id_token_signed_response_alg=alg)
    auth_time = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=10)
    body = await issue(services, client, alice, auth_time=auth_time, auth_req_id="req-123", acr="1")
    token = jwt.decode(body["id_token"], await published_keys(http), algorithms=[alg])
    assert token.header["alg"] == alg
    assert token.header["kid"] == services.keys.signing_key(alg).kid
    claims = token.claims
    assert claims["iss"] == ISSUER
    assert claims["aud"] == client.client_id
    assert claims["sub"] == "alice"
    assert claims["auth_time"] == int(auth_time.timestamp())
    assert claims["acr"] == "1"
    assert claims["exp"] - claims["iat"] == services.settings.id_token_ttl
    assert claims["at_hash"] == half_hash(body["access_token"])
    assert claims[RT_HASH_CLAIM] == half_hash(body["refresh_token"])
    assert claims[AUTH_REQ_ID_CLAIM] == "req-123"


async def test_client_without_the_refresh_grant_gets_no_refresh_token(
    services: Services,
    make_client: Any,
    alice: User,
    db: asyncpg.Connection,
    http: httpx.AsyncClient,
) -> None:
    client: RegisteredClient = await make_client(grant_types=(CIBA,))
    body = await issue(services, client, alice)
    assert "refresh_token" not in body
    claims = jwt.decode(body["id_token"], await published_keys(http)).claims
    assert RT_HASH_CLAIM not in claims and AUTH_REQ_ID_CLAIM not in claims
    assert "at_hash" in claims and "acr" not in claims
    assert await db.fetchval("SELECT count(*) FROM refresh_tokens") == 0
    assert await db.fetchval("SELECT family_id FROM access_tokens") is None


async def test_refresh_token_is_stored_only_as_a_hash_with_the_clients_lifetime(
    services: Services, make_client: Any, alice: User, db: asyncpg.Connection
) -> None:
    client: RegisteredClient = await make_client(refresh_token_ttl=600, access_token_ttl=120)
    body = await issue(services, client, alice, auth_request_id=None)
    assert body["expires_in"] == 120
    row = await db.fetchrow("SELECT * FROM refresh_tokens")
    assert bytes(row["token_hash"]) == hash_secret(body["refresh_token"])
    assert row["expires_at"] - row["created_at"] == timedelta(seconds=600)
    assert row["client_id"] == client.client_id and row["rotated_at"] is None
    family = await db.fetchval("SELECT family_id FROM access_tokens")
    assert family == row["family_id"]
    dump = json.dumps([dict(r) for r in await db.fetch("SELECT scope FROM refresh_tokens")])
    assert body["refresh_token"] not in dump


async def test_issuance_is_audited_without_secrets(
    services: Services, rp: RegisteredClient, alice: User, db: asyncpg.Connection
) -> None:
    body = await issue(services, rp, alice)
    [event] = await db.fetch("SELECT * FROM audit_events WHERE event = 'token_issued'")
    assert event["client_id"] == rp.client_id and event["user_id"] == alice.user_id
    detail = event["detail"]
    assert detail["grant"] == "ciba"
    assert (
        detail["jti"]
        == read_access_token(services.keys, body["access_token"], issuer=ISSUER)["jti"]
    )
    text = json.dumps(detail)
    for secret in (body["refresh_token"], body["access_token"], body["id_token"]):
        assert secret not in text


async def test_issuance_rolls_back_with_the_callers_transaction(
    services: Services, rp: RegisteredClient, alice: User, db: asyncpg.Connection
) -> None:
    with pytest.raises(RuntimeError):
        async with services.pool.acquire() as conn, conn.transaction():
            grant = Grant(
                client=rp.client,
                user_id=alice.user_id,
                subject=alice.subject,
                scope=("openid",),
                auth_time=datetime.now(UTC),
            )
            await issue_tokens(services, conn, grant)
            raise RuntimeError("the caller failed after issuing")
    for table in ("access_tokens", "refresh_tokens", "audit_events"):
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": ISSUER,
        "sub": "alice",
        "aud": "client-a",
        "iat": now,
        "exp": now + 60,
        **overrides,
    }


async def test_own_id_token_is_accepted_as_a_hint_even_when_expired(services: Services) -> None:
    keys = services.keys
    long_ago = int(time.time()) - 86400
    expired = sign_id_token(keys, "PS256", _claims(iat=long_ago, exp=long_ago + 60))
    assert verify_own_id_token(keys, expired, issuer=ISSUER, client_id="client-a")["sub"] == "alice"
    several = sign_id_token(keys, "ES256", _claims(aud=["client-b", "client-a"]))
    assert verify_own_id_token(keys, several, issuer=ISSUER, client_id="client-a")


async def test_id_token_hint_is_refused_unless_ours_for_that_client(
    services: Services, rp: RegisteredClient, alice: User
) -> None:
    keys = services.keys
    stranger = jwk.ECKey.generate_key("P-256", private=True)
    forged = jwt.encode({"alg": "ES256", "kid": keys.signing_key("ES256").kid}, _claims(), stranger)
    access_token = (await issue(services, rp, alice))["access_token"]
    refused = [
        sign_id_token(keys, "ES256", _claims(aud="client-b")),
        sign_id_token(keys, "ES256", _claims(iss="https://elsewhere.example")),
        sign_id_token(keys, "ES256", _claims(sub=None)),
        forged,
        access_token,
        "",
        "not-a-jwt",
        "a.b.c",
        "e30.e30.",
    ]
    for token in refused:
        with pytest.raises(InvalidRequest):
            verify_own_id_token(keys, token, issuer=ISSUER, client_id="client-a")


async def test_only_our_access_tokens_are_read_back(
    services: Services, rp: RegisteredClient, alice: User
) -> None:
    keys = services.keys
    body = await issue(services, rp, alice)
    claims = read_access_token(keys, body["access_token"], issuer=ISSUER)
    assert claims is not None and claims["client_id"] == rp.client_id
    assert read_access_token(keys, body["access_token"], issuer="https://other.example") is None
    assert read_access_token(keys, body["id_token"], issuer=ISSUER) is None
    assert read_access_token(keys, body["refresh_token"], issuer=ISSUER) is None
    assert read_access_token(keys, "x" * 5000, issuer=ISSUER) is None
