"""Starting an authentication (CIBA §7.1): parameters, hints, signed requests, the answer."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from backchannel.db.users import User
from backchannel.oauth.user_codes import hash_user_code
from backchannel.rp import OAuthError, PrivateKeyJwt, UsageError
from tests.conftest import RegisteredClient
from tests.rp.conftest import MakeClient, basic
from tests.support.ciba import audit_events
from tests.support.factories import create_user
from tests.support.jose import ec_key, public_jwks
from tests.support.relying_party import RequestLog
from tests.support.served import ServedApp
from tests.support.tokens import issue_tokens_for

pytestmark = pytest.mark.usefixtures("alice")


async def _only_request(db: asyncpg.Connection) -> asyncpg.Record:
    row = await db.fetchrow(
        """SELECT scope, acr_values, binding_message, requested_expiry,
                  extract(epoch FROM expires_at - created_at)::int AS lifetime
             FROM auth_requests"""
    )
    assert row is not None
    return row


@pytest.mark.parametrize(
    "hints",
    [{}, {"login_hint": "alice@example.com", "id_token_hint": "eyJ.x.y"}],
    ids=["no hint", "two hints"],
)
async def test_start_needs_exactly_one_hint_and_sends_nothing_otherwise(
    make_rp_client: MakeClient,
    rp: RegisteredClient,
    requests_sent: RequestLog,
    hints: dict[str, Any],
) -> None:
    client = await make_rp_client(basic(rp))
    with pytest.raises(UsageError, match="exactly one of login_hint"):
        await client.start(**hints)
    assert requests_sent.to("/bc-authorize") == []


async def test_parameters_reach_the_server_as_given(
    make_rp_client: MakeClient, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    client = await make_rp_client(basic(rp))
    started = await client.start(
        login_hint="alice@example.com",
        scope=["openid", "email"],
        binding_message="Pay 80 EUR at Acme Coffee?",
        requested_expiry=120,
        acr_values=["urn:acr:phone", "urn:acr:any"],
        authorization_details=[{"type": "payment_initiation", "amount": "80.00"}],
    )
    assert started.expires_in == 120
    assert started.interval == 5
    assert started.number_match is None
    row = await _only_request(db)
    assert row["scope"] == ["openid", "email"]
    assert row["acr_values"] == ["urn:acr:phone", "urn:acr:any"]
    assert row["binding_message"] == "Pay 80 EUR at Acme Coffee?"
    assert (row["requested_expiry"], row["lifetime"]) == (120, 120)


async def test_id_token_hint_names_the_user_of_an_earlier_id_token(
    make_rp_client: MakeClient,
    rp: RegisteredClient,
    server: ServedApp,
    alice: User,
    db: asyncpg.Connection,
) -> None:
    earlier = await issue_tokens_for(server.services, rp, alice)
    client = await make_rp_client(basic(rp))
    await client.start(id_token_hint=earlier["id_token"])
    assert await db.fetchval("SELECT user_id FROM auth_requests") == alice.user_id


async def test_signed_request_carries_the_parameters_in_a_jws(
    make_rp_client: MakeClient, make_client: Any, db: asyncpg.Connection
) -> None:
    key = ec_key()
    registered: RegisteredClient = await make_client(
        token_endpoint_auth_method="private_key_jwt",
        jwks=public_jwks(key),
        require_signed_request=True,
    )
    client = await make_rp_client(PrivateKeyJwt(registered.client_id, key), request_signing_key=key)
    started = await client.start(
        login_hint="alice@example.com", binding_message="Order 4711", requested_expiry=90
    )
    assert started.expires_in == 90
    row = await _only_request(db)
    assert (row["binding_message"], row["requested_expiry"]) == ("Order 4711", 90)
    [issued] = await audit_events(db, "auth_request_issued")
    assert issued["detail"]["signed"] is True
    # The request object's jti is fresh each time: a second signed request is not a replay.
    await client.start(login_hint="alice@example.com")


async def test_client_that_must_sign_is_refused_without_a_signing_key(
    make_rp_client: MakeClient, make_client: Any
) -> None:
    registered: RegisteredClient = await make_client(
        jwks=public_jwks(ec_key()), require_signed_request=True
    )
    client = await make_rp_client(basic(registered))
    with pytest.raises(OAuthError) as caught:
        await client.start(login_hint="alice@example.com")
    assert (caught.value.error, caught.value.status) == ("invalid_request", 400)


async def test_number_match_from_the_server_is_returned_to_show_the_user(
    make_rp_client: MakeClient, make_client: Any
) -> None:
    registered: RegisteredClient = await make_client(number_matching=True)
    client = await make_rp_client(basic(registered))
    started = await client.start(login_hint="alice@example.com")
    assert started.number_match is not None and started.number_match.isdigit()


async def test_user_code_travels_to_the_server(
    make_rp_client: MakeClient, make_client: Any, db: asyncpg.Connection
) -> None:
    await create_user(db, email="bob@example.com", user_code_hash=hash_user_code("2468"))
    registered: RegisteredClient = await make_client(backchannel_user_code_parameter=True)
    client = await make_rp_client(basic(registered))
    await client.start(login_hint="bob@example.com", user_code="2468")
    with pytest.raises(OAuthError) as caught:
        await client.start(login_hint="bob@example.com", user_code="1357")
    assert caught.value.error == "invalid_user_code"


async def test_refusal_is_an_oauth_error_with_its_code_description_and_status(
    make_rp_client: MakeClient, rp: RegisteredClient
) -> None:
    client = await make_rp_client(basic(rp))
    with pytest.raises(OAuthError) as caught:
        await client.start(login_hint="nobody@example.com")
    error = caught.value
    assert (error.error, error.status) == ("unknown_user_id", 400)
    assert error.error_description
