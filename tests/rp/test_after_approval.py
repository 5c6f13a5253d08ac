"""Using the tokens: userinfo, refresh, introspection and revocation on the real server."""

from __future__ import annotations

import asyncpg
import pytest

from backchannel.rp import (
    CibaClient,
    ClientSecretBasic,
    InvalidGrant,
    OAuthError,
    ProtocolError,
    TokenResponse,
)
from tests.rp.conftest import NewClient
from tests.support.ciba import decide
from tests.support.stand_in_issuer import run_stand_in_issuer

pytestmark = pytest.mark.usefixtures("alice")


@pytest.fixture
async def tokens(client: CibaClient, db: asyncpg.Connection) -> TokenResponse:
    started = await client.start(login_hint="alice@example.com", scope="openid email")
    await decide(db, started.auth_req_id, "approved")
    return await client.wait(started)


async def test_userinfo_gives_the_users_claims_for_the_granted_scope(
    client: CibaClient, tokens: TokenResponse
) -> None:
    assert tokens.id_token_claims is not None
    claims = await client.userinfo(
        tokens.access_token, expected_subject=tokens.id_token_claims["sub"]
    )
    assert claims == {"sub": "alice", "email": "alice@example.com"}


async def test_userinfo_for_another_subject_than_the_id_tokens_is_refused(
    client: CibaClient, tokens: TokenResponse
) -> None:
    with pytest.raises(ProtocolError, match="sub"):
        await client.userinfo(tokens.access_token, expected_subject="bob")


async def test_userinfo_with_a_revoked_access_token_is_an_oauth_error(
    client: CibaClient, tokens: TokenResponse
) -> None:
    await client.revoke(tokens.access_token, token_type_hint="access_token")
    with pytest.raises(OAuthError) as caught:
        await client.userinfo(tokens.access_token)
    assert (caught.value.error, caught.value.status) == ("invalid_token", 401)


async def test_userinfo_error_told_only_in_the_bearer_challenge_is_an_oauth_error(
    new_client: NewClient,
) -> None:
    async with run_stand_in_issuer("rp-1") as stand_in:
        client = await new_client(stand_in.url, ClientSecretBasic("rp-1", "secret"))
        with pytest.raises(OAuthError) as caught:
            await client.userinfo("an-expired-token")
    error = caught.value
    assert (error.error, error.error_description, error.status) == (
        "invalid_token",
        "the token expired",
        401,
    )


async def test_refresh_rotates_the_refresh_token_and_verifies_the_new_id_token(
    client: CibaClient, tokens: TokenResponse
) -> None:
    assert tokens.refresh_token is not None
    refreshed = await client.refresh(tokens.refresh_token)
    assert refreshed.refresh_token not in (None, tokens.refresh_token)
    assert refreshed.access_token != tokens.access_token
    assert refreshed.id_token_claims is not None
    assert refreshed.id_token_claims["sub"] == "alice"
    with pytest.raises(InvalidGrant):  # the old one was rotated away
        await client.refresh(tokens.refresh_token)


async def test_introspection_shows_a_live_token_active_and_a_revoked_one_inactive(
    client: CibaClient, tokens: TokenResponse
) -> None:
    assert tokens.refresh_token is not None
    live = await client.introspect(tokens.access_token)
    assert live["active"] is True and live["sub"] == "alice"
    await client.revoke(tokens.refresh_token, token_type_hint="refresh_token")
    assert await client.introspect(tokens.refresh_token) == {"active": False}
    # Revoking a refresh token revokes its family, the access token included (RFC 7009 §2.1).
    assert await client.introspect(tokens.access_token) == {"active": False}
