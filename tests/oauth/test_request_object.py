"""Signed authentication requests (CIBA §7.1.1), including the conformance suite's time cases."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from backchannel.db.clients import Client
from backchannel.errors import InvalidRequest
from backchannel.oauth.request_object import verify_request_object
from backchannel.oauth.services import Services
from tests.support import jose

MINUTE = 60


@pytest.fixture
def client_key() -> Any:
    return jose.ec_key()


@pytest.fixture
async def client(make_client: Any, client_key: Any) -> Client:
    registered = await make_client(jwks=jose.public_jwks(client_key))
    result: Client = registered.client
    return result


async def refused(services: Services, client: Client, request: str, reason: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await verify_request_object(services, client, request)
    assert type(caught.value) is InvalidRequest
    assert caught.value.status == 400
    assert reason in (caught.value.description or "")


def signed(
    services: Services, client: Client, key: Any, *, alg: str = "ES256", **params: Any
) -> str:
    return jose.request_object(client.client_id, key, services.settings.issuer, alg, **params)


async def test_valid_request_object_returns_its_claims(
    services: Services, client: Client, client_key: Any
) -> None:
    request = signed(services, client, client_key, binding_message="W4SCT", requested_expiry=120)
    claims = await verify_request_object(services, client, request)
    assert claims["scope"] == "openid"
    assert claims["login_hint"] == "alice@example.com"
    assert claims["binding_message"] == "W4SCT"
    assert claims["requested_expiry"] == 120


@pytest.mark.parametrize("aud", ["issuer", "backchannel", "token", "list"])
async def test_request_object_audience_may_be_issuer_or_endpoint(
    services: Services, client: Client, client_key: Any, aud: str
) -> None:
    settings = services.settings
    audiences: dict[str, str | list[str]] = {
        "issuer": settings.issuer,
        "backchannel": settings.backchannel_endpoint,
        "token": settings.token_endpoint,
        "list": [settings.issuer, "https://rp.example"],
    }
    request = jose.request_object(client.client_id, client_key, audiences[aud])
    assert (await verify_request_object(services, client, request))["iss"] == client.client_id


@pytest.mark.parametrize(
    ("make_key", "alg"), [(jose.rsa_key, "PS256"), (jose.ed25519_key, "EdDSA")]
)
async def test_request_object_accepts_default_asymmetric_algorithms(
    services: Services, make_client: Any, make_key: Any, alg: str
) -> None:
    key = make_key()
    client = (await make_client(jwks=jose.public_jwks(key))).client
    await verify_request_object(services, client, signed(services, client, key, alg=alg))


async def test_rs256_request_object_is_refused_unless_registered(
    services: Services, make_client: Any
) -> None:
    key = jose.rsa_key()
    default = (await make_client(jwks=jose.public_jwks(key))).client
    await refused(services, default, signed(services, default, key, alg="RS256"), "RS256")
    registered = (
        await make_client(
            jwks=jose.public_jwks(key), backchannel_authentication_request_signing_alg="RS256"
        )
    ).client
    await verify_request_object(
        services, registered, signed(services, registered, key, alg="RS256")
    )


async def test_only_the_registered_algorithm_is_accepted(
    services: Services, make_client: Any
) -> None:
    ec, rsa = jose.ec_key(), jose.rsa_key()
    client = (
        await make_client(
            jwks=jose.public_jwks(ec, rsa), backchannel_authentication_request_signing_alg="PS256"
        )
    ).client
    await refused(services, client, signed(services, client, ec, alg="ES256"), "ES256")
    await verify_request_object(services, client, signed(services, client, rsa, alg="PS256"))


async def test_unsigned_request_object_is_refused(services: Services, client: Client) -> None:
    claims = jose.request_object_claims(client.client_id, services.settings.issuer)
    await refused(services, client, jose.unsigned(claims), "none")


async def test_hs256_request_object_is_refused(services: Services, client: Client) -> None:
    claims = jose.request_object_claims(client.client_id, services.settings.issuer)
    request = jose.sign_hs256(claims, "a-shared-secret-that-is-long-enough-32")
    await refused(services, client, request, "HS256")


async def test_encrypted_request_object_is_refused(services: Services, client: Client) -> None:
    await refused(services, client, "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d", "encrypted")


@pytest.mark.parametrize("junk", ["", "junk", "a.b", "!!.??.**", "e30.e30.", "bnVsbA.e30.sig"])
async def test_malformed_request_object_is_refused(
    services: Services, client: Client, junk: str
) -> None:
    await refused(services, client, junk, "request object refused")


async def test_request_object_signed_with_another_clients_key_is_refused(
    services: Services, client: Client, make_client: Any
) -> None:
    other_key = jose.ec_key()
    await make_client(jwks=jose.public_jwks(other_key))
    await refused(services, client, signed(services, client, other_key), "key")


async def test_request_object_with_forged_signature_for_the_right_kid_is_refused(
    services: Services, client: Client, client_key: Any
) -> None:
    claims = jose.request_object_claims(client.client_id, services.settings.issuer)
    forged = jose.sign(claims, jose.ec_key(), header={"kid": client_key.kid})
    await refused(services, client, forged, "signature")


async def test_client_without_keys_cannot_send_request_objects(services: Services, rp: Any) -> None:
    await refused(services, rp.client, signed(services, rp.client, jose.ec_key()), "keys")


async def test_request_object_issued_by_another_client_is_refused(
    services: Services, client: Client, client_key: Any
) -> None:
    request = signed(services, client, client_key, iss="someone-else")
    await refused(services, client, request, "iss")


@pytest.mark.parametrize("aud", ["https://other.example", ["https://other.example"], None, []])
async def test_request_object_for_another_audience_is_refused(
    services: Services, client: Client, client_key: Any, aud: Any
) -> None:
    request = jose.sign(
        {**jose.request_object_claims(client.client_id, "x"), "aud": aud}, client_key
    )
    await refused(services, client, request, "aud")


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf", "jti"])
async def test_request_object_without_a_required_claim_is_refused(
    services: Services, client: Client, client_key: Any, claim: str
) -> None:
    removed: dict[str, Any] = {claim: None}
    request = signed(services, client, client_key, **removed)
    await refused(services, client, request, claim)


@pytest.mark.parametrize(
    ("times", "reason"),
    [
        pytest.param({"exp_in": 70 * MINUTE}, "lifetime", id="exp-70-minutes-ahead"),
        pytest.param({"nbf_offset": 10 * MINUTE}, "nbf", id="nbf-10-minutes-ahead"),
        pytest.param({"nbf_offset": -70 * MINUTE}, "lifetime", id="nbf-70-minutes-ago"),
        pytest.param({"exp_in": -MINUTE, "nbf_offset": -5 * MINUTE}, "expired", id="expired"),
        pytest.param({"iat_offset": 10 * MINUTE}, "iat", id="iat-10-minutes-ahead"),
    ],
)
async def test_conformance_time_cases_are_refused(
    services: Services, client: Client, client_key: Any, times: dict[str, Any], reason: str
) -> None:
    await refused(services, client, signed(services, client, client_key, **times), reason)


async def test_request_object_of_exactly_the_maximum_lifetime_is_accepted(
    services: Services, client: Client, client_key: Any
) -> None:
    lifetime = services.settings.request_object_max_lifetime
    request = signed(services, client, client_key, exp_in=lifetime - 5, nbf_offset=-5)
    await verify_request_object(services, client, request)


async def test_request_object_times_within_clock_skew_are_accepted(
    services: Services, client: Client, client_key: Any
) -> None:
    skew = services.settings.clock_skew
    request = signed(services, client, client_key, nbf_offset=skew // 2, iat_offset=skew // 2)
    await verify_request_object(services, client, request)


async def test_replayed_request_object_is_refused(
    services: Services, client: Client, client_key: Any, db: asyncpg.Connection
) -> None:
    request = signed(services, client, client_key)
    await verify_request_object(services, client, request)
    await refused(services, client, request, "jti")
    purpose = await db.fetchval("SELECT purpose FROM used_jtis WHERE issuer = $1", client.client_id)
    assert purpose == "request_object"


async def test_same_jti_from_two_clients_is_not_a_replay(
    services: Services, client: Client, client_key: Any, make_client: Any
) -> None:
    other_key = jose.ec_key()
    other = (await make_client(jwks=jose.public_jwks(other_key))).client
    await verify_request_object(services, client, signed(services, client, client_key, jti="same"))
    await verify_request_object(services, other, signed(services, other, other_key, jti="same"))


@pytest.fixture
async def jwks_server() -> AsyncIterator[jose.JwksServer]:
    async with jose.serve_jwks() as server:
        yield server


async def test_request_object_verified_with_keys_from_jwks_uri(
    services: Services, make_client: Any, jwks_server: jose.JwksServer
) -> None:
    key = jose.ec_key()
    jwks_server.jwks = jose.public_jwks(key)
    client = (await make_client(jwks_uri=jwks_server.url)).client
    local = dataclasses.replace(
        services, settings=services.settings.replace(allow_insecure_urls=True)
    )
    await refused(services, client, signed(services, client, key), "jwks_uri")
    assert jwks_server.hits == 0
    await verify_request_object(local, client, signed(local, client, key))
    assert jwks_server.hits == 1
