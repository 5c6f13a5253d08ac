"""Resolving login_hint, id_token_hint and login_hint_token to a user (CIBA §7.1)."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import pytest
from joserfc import jwt

from backchannel.db.clients import Client
from backchannel.db.users import User
from backchannel.errors import ExpiredLoginHintToken, InvalidRequest, OAuthError, UnknownUserId
from backchannel.oauth.hint_resolution import resolve_user
from backchannel.oauth.services import Services
from tests.conftest import ISSUER, RegisteredClient
from tests.support import factories, jose

IDP = "https://idp.example"


async def refused(
    error: type[OAuthError], services: Services, client: Client, **hint: str
) -> OAuthError:
    with pytest.raises(error) as caught:
        await resolve_user(services, client, **hint)
    assert type(caught.value) is error
    assert caught.value.status == 400
    return caught.value


# login_hint


@pytest.mark.parametrize(
    "hint",
    [
        "alice@example.com",
        "mailto:Alice@Example.com",
        "tel:+44 7700 900123",
        "+447700900123",
        "account:12345678",
        "12345678",
        "username:alice",
        "Alice",
    ],
)
async def test_login_hint_forms_resolve_to_the_user(
    services: Services, rp: RegisteredClient, alice: User, hint: str
) -> None:
    user = await resolve_user(services, rp.client, login_hint=hint)
    assert user.user_id == alice.user_id


async def test_all_digit_hint_falls_back_to_username(
    services: Services, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    bob = await factories.create_user(db, username="424242")
    assert (await resolve_user(services, rp.client, login_hint="424242")).user_id == bob.user_id


@pytest.mark.parametrize("hint", ["bob@example.com", "tel:+447700900999", "nobody", "", "\x00"])
async def test_unknown_login_hint_is_unknown_user_id(
    services: Services, rp: RegisteredClient, alice: User, hint: str
) -> None:
    await refused(UnknownUserId, services, rp.client, login_hint=hint)


async def test_disabled_user_is_unknown_user_id(
    services: Services, rp: RegisteredClient, alice: User, db: asyncpg.Connection
) -> None:
    await db.execute("UPDATE users SET disabled_at = now() WHERE user_id = $1", alice.user_id)
    await refused(UnknownUserId, services, rp.client, login_hint="alice@example.com")


# id_token_hint


def id_token(services: Services, client_id: str, **overrides: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": services.settings.issuer,
        "aud": client_id,
        "sub": "alice",
        "iat": now,
        "exp": now + 300,
    }
    claims.update(overrides)
    key = services.keys.signing_key("ES256")
    return jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key, algorithms=["ES256"])


async def test_id_token_hint_resolves_to_its_subject(
    services: Services, rp: RegisteredClient, alice: User
) -> None:
    hint = id_token(services, rp.client_id)
    assert (await resolve_user(services, rp.client, id_token_hint=hint)).user_id == alice.user_id


async def test_expired_id_token_hint_is_still_accepted(
    services: Services, rp: RegisteredClient, alice: User
) -> None:
    past = int(time.time()) - 86400
    hint = id_token(services, rp.client_id, iat=past, exp=past + 300)
    assert (await resolve_user(services, rp.client, id_token_hint=hint)).user_id == alice.user_id


async def test_id_token_hint_issued_to_another_client_is_invalid_request(
    services: Services, rp: RegisteredClient, alice: User
) -> None:
    hint = id_token(services, "another-client")
    await refused(InvalidRequest, services, rp.client, id_token_hint=hint)


async def test_id_token_hint_from_another_issuer_is_invalid_request(
    services: Services, rp: RegisteredClient, alice: User
) -> None:
    hint = id_token(services, rp.client_id, iss="https://evil.example")
    await refused(InvalidRequest, services, rp.client, id_token_hint=hint)


async def test_id_token_hint_not_signed_by_us_is_invalid_request(
    services: Services, rp: RegisteredClient, alice: User
) -> None:
    now = int(time.time())
    claims = {"iss": services.settings.issuer, "aud": rp.client_id, "sub": "alice", "exp": now}
    forged = jose.sign(claims, jose.ec_key())
    await refused(InvalidRequest, services, rp.client, id_token_hint=forged)
    await refused(InvalidRequest, services, rp.client, id_token_hint="not-a-jwt")


async def test_id_token_hint_for_unknown_subject_is_unknown_user_id(
    services: Services, rp: RegisteredClient, alice: User
) -> None:
    hint = id_token(services, rp.client_id, sub="deleted-user")
    await refused(UnknownUserId, services, rp.client, id_token_hint=hint)


async def test_id_token_hint_for_disabled_user_is_unknown_user_id(
    services: Services, rp: RegisteredClient, alice: User, db: asyncpg.Connection
) -> None:
    await db.execute("UPDATE users SET disabled_at = now() WHERE user_id = $1", alice.user_id)
    hint = id_token(services, rp.client_id)
    await refused(UnknownUserId, services, rp.client, id_token_hint=hint)


# login_hint_token


@pytest.fixture
def idp_key() -> Any:
    return jose.ec_key()


@pytest.fixture
async def trusting(make_client: Any, idp_key: Any) -> Client:
    """A client that trusts login_hint_tokens from IDP."""
    registered = await make_client(
        login_hint_token_issuers=({"iss": IDP, "jwks": jose.public_jwks(idp_key)},)
    )
    client: Client = registered.client
    return client


@pytest.mark.parametrize(
    "claims",
    [
        {"sub_id": {"format": "email", "email": "Alice@Example.com"}},
        {"sub_id": {"format": "phone_number", "phone_number": "+44 7700 900123"}},
        {"sub_id": {"format": "opaque", "id": "12345678"}},
        {"sub_id": {"format": "opaque", "id": "alice"}},
        {"sub_id": {"format": "iss_sub", "iss": ISSUER, "sub": "alice"}},
        {
            "sub_id": {
                "format": "aliases",
                "identifiers": [
                    {"format": "email", "email": "nobody@example.com"},
                    {"format": "phone_number", "phone_number": "+447700900123"},
                ],
            }
        },
        {"subject": {"subject_type": "phone", "phone": "+447700900123"}},
        {"email": "alice@example.com"},
        {"phone_number": "+447700900123"},
        {"login_hint": "username:alice"},
    ],
)
async def test_login_hint_token_subject_forms_resolve_to_the_user(
    services: Services, trusting: Client, idp_key: Any, alice: User, claims: dict[str, Any]
) -> None:
    token = jose.login_hint_token(IDP, idp_key, **claims)
    user = await resolve_user(services, trusting, login_hint_token=token)
    assert user.user_id == alice.user_id


async def test_expired_login_hint_token_is_expired_login_hint_token(
    services: Services, trusting: Client, idp_key: Any, alice: User
) -> None:
    past = int(time.time()) - 600
    token = jose.login_hint_token(IDP, idp_key, email="alice@example.com", iat=past, exp=past + 60)
    await refused(ExpiredLoginHintToken, services, trusting, login_hint_token=token)


async def test_login_hint_token_from_untrusted_issuer_is_invalid_request(
    services: Services, trusting: Client, idp_key: Any, alice: User
) -> None:
    token = jose.login_hint_token("https://other-idp.example", idp_key, email="alice@example.com")
    exc = await refused(InvalidRequest, services, trusting, login_hint_token=token)
    assert "not trusted" in (exc.description or "")


async def test_login_hint_token_is_trusted_per_client(
    services: Services, rp: RegisteredClient, idp_key: Any, alice: User
) -> None:
    token = jose.login_hint_token(IDP, idp_key, email="alice@example.com")
    await refused(InvalidRequest, services, rp.client, login_hint_token=token)


async def test_login_hint_token_with_bad_signature_is_invalid_request(
    services: Services, trusting: Client, alice: User
) -> None:
    token = jose.login_hint_token(IDP, jose.ec_key(), email="alice@example.com")
    await refused(InvalidRequest, services, trusting, login_hint_token=token)


async def test_unsigned_or_hs256_login_hint_token_is_invalid_request(
    services: Services, trusting: Client, alice: User
) -> None:
    claims = {"iss": IDP, "email": "alice@example.com"}
    for token in (jose.unsigned(claims), jose.sign_hs256(claims, "x" * 32), "garbage"):
        await refused(InvalidRequest, services, trusting, login_hint_token=token)


async def test_login_hint_token_for_another_audience_is_invalid_request(
    services: Services, trusting: Client, idp_key: Any, alice: User
) -> None:
    token = jose.login_hint_token(
        IDP, idp_key, email="alice@example.com", aud="https://other-op.example"
    )
    await refused(InvalidRequest, services, trusting, login_hint_token=token)


@pytest.mark.parametrize(
    "claims",
    [
        {"email": "bob@example.com"},
        {"sub_id": {"format": "iss_sub", "iss": "https://elsewhere.example", "sub": "alice"}},
        {"sub_id": {"format": "uri", "uri": "https://example.com/alice"}},
        {"sub": "alice"},
        {},
    ],
)
async def test_login_hint_token_without_a_known_user_is_unknown_user_id(
    services: Services, trusting: Client, idp_key: Any, alice: User, claims: dict[str, Any]
) -> None:
    token = jose.login_hint_token(IDP, idp_key, **claims)
    await refused(UnknownUserId, services, trusting, login_hint_token=token)
