"""Each client authentication method, against the real server's checks."""

from __future__ import annotations

from typing import Any

import pytest
from joserfc.jwk import Key

from backchannel.rp import (
    ClientSecretBasic,
    ClientSecretPost,
    InvalidClient,
    PrivateKeyJwt,
    UsageError,
)
from tests.conftest import RegisteredClient
from tests.rp.conftest import MakeClient, basic
from tests.support.jose import ec_key, public_jwks, rsa_key
from tests.support.relying_party import RequestLog

pytestmark = pytest.mark.usefixtures("alice")


async def test_client_secret_basic_authenticates_at_the_backchannel_endpoint(
    make_rp_client: MakeClient, rp: RegisteredClient, requests_sent: RequestLog
) -> None:
    client = await make_rp_client(basic(rp))
    started = await client.start(login_hint="alice@example.com")
    assert started.auth_req_id
    assert requests_sent.to("/bc-authorize")[0].headers["Authorization"].startswith("Basic ")


async def test_client_secret_post_authenticates_with_form_parameters(
    make_rp_client: MakeClient, make_client: Any
) -> None:
    registered: RegisteredClient = await make_client(
        token_endpoint_auth_method="client_secret_post"
    )
    assert registered.secret is not None
    client = await make_rp_client(ClientSecretPost(registered.client_id, registered.secret))
    started = await client.start(login_hint="alice@example.com")
    assert started.expires_in > 0


@pytest.mark.parametrize("key_of", [ec_key, rsa_key], ids=["ES256", "PS256"])
async def test_private_key_jwt_signs_a_fresh_assertion_for_every_request(
    make_rp_client: MakeClient, make_client: Any, key_of: Any
) -> None:
    key: Key = key_of()
    registered: RegisteredClient = await make_client(
        token_endpoint_auth_method="private_key_jwt", jwks=public_jwks(key)
    )
    client = await make_rp_client(PrivateKeyJwt(registered.client_id, key))
    # The server refuses a replayed jti: two requests within a second need two assertions.
    first = await client.start(login_hint="alice@example.com")
    second = await client.start(login_hint="alice@example.com")
    assert first.auth_req_id != second.auth_req_id


async def test_wrong_secret_is_invalid_client_with_its_http_status(
    make_rp_client: MakeClient, rp: RegisteredClient
) -> None:
    client = await make_rp_client(ClientSecretBasic(rp.client_id, "not-the-secret"))
    with pytest.raises(InvalidClient) as caught:
        await client.start(login_hint="alice@example.com")
    assert caught.value.status == 401
    assert caught.value.error == "invalid_client"


async def test_assertion_signed_with_another_key_is_invalid_client(
    make_rp_client: MakeClient, make_client: Any
) -> None:
    registered: RegisteredClient = await make_client(
        token_endpoint_auth_method="private_key_jwt", jwks=public_jwks(ec_key())
    )
    client = await make_rp_client(PrivateKeyJwt(registered.client_id, ec_key()))
    with pytest.raises(InvalidClient):
        await client.start(login_hint="alice@example.com")


def test_private_key_jwt_refuses_a_public_key_or_a_symmetric_algorithm() -> None:
    key = ec_key()
    public = type(key).import_key(key.as_dict(private=False))
    with pytest.raises(UsageError, match="private"):
        PrivateKeyJwt("rp-1", public)
    with pytest.raises(UsageError, match="asymmetric"):
        PrivateKeyJwt("rp-1", key, alg="HS256")
