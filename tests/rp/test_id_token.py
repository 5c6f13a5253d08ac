"""ID token verification: each check refuses the token that breaks it.

The tokens are crafted and signed by a stand-in provider whose discovery
document and JWK Set the client fetches over HTTP, as from any provider.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from backchannel.rp import CibaClient, ClientSecretBasic, InvalidIdToken
from tests.rp.conftest import NewClient
from tests.support.jose import ec_key, sign, sign_hs256, unsigned
from tests.support.stand_in_issuer import (
    AUTH_REQ_ID_CLAIM,
    RT_HASH_CLAIM,
    StandInIssuer,
    left_half_sha256,
    run_stand_in_issuer,
)

CLIENT_ID = "rp-1"


@pytest.fixture
async def stand_in() -> AsyncIterator[StandInIssuer]:
    async with run_stand_in_issuer(CLIENT_ID) as issuer:
        yield issuer


@pytest.fixture
async def client(new_client: NewClient, stand_in: StandInIssuer) -> CibaClient:
    return await new_client(stand_in.url, ClientSecretBasic(CLIENT_ID, "secret"))


def _with_payload(token: str, **changes: Any) -> str:
    """The same header and signature over a changed payload."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    raw = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{raw}.{signature}"


async def test_well_formed_token_verifies_and_gives_its_claims(
    client: CibaClient, stand_in: StandInIssuer
) -> None:
    extra: dict[str, Any] = {AUTH_REQ_ID_CLAIM: "req-1"}
    token = stand_in.id_token(at_hash=left_half_sha256("at-1"), **extra)
    claims = await client.verify_id_token(token, auth_req_id="req-1", access_token="at-1")
    assert claims["sub"] == "alice"


async def test_token_without_kid_is_verified_with_the_published_key_of_its_type(
    client: CibaClient, stand_in: StandInIssuer
) -> None:
    token = sign(stand_in.claims(), stand_in.key, "ES256", kid=False)
    assert (await client.verify_id_token(token))["sub"] == "alice"


async def test_tampered_payload_fails_the_signature(
    client: CibaClient, stand_in: StandInIssuer
) -> None:
    token = _with_payload(stand_in.id_token(), sub="mallory")
    with pytest.raises(InvalidIdToken, match="signature"):
        await client.verify_id_token(token)


async def test_token_signed_by_an_unpublished_key_under_a_published_kid_is_refused(
    client: CibaClient, stand_in: StandInIssuer
) -> None:
    token = stand_in.id_token(key=ec_key(), header={"kid": stand_in.key.kid})
    with pytest.raises(InvalidIdToken, match="signature"):
        await client.verify_id_token(token)


@pytest.mark.parametrize(
    "token_of",
    [
        lambda claims: unsigned(claims),
        lambda claims: sign_hs256(claims, "a shared secret of thirty-two bytes!!"),
    ],
    ids=["alg none", "HS256"],
)
async def test_unsigned_or_symmetric_token_is_refused(
    client: CibaClient, stand_in: StandInIssuer, token_of: Any
) -> None:
    with pytest.raises(InvalidIdToken, match="algorithm"):
        await client.verify_id_token(token_of(stand_in.claims()))


async def test_access_token_is_not_taken_for_an_id_token(
    client: CibaClient, stand_in: StandInIssuer
) -> None:
    with pytest.raises(InvalidIdToken, match="access token"):
        await client.verify_id_token(stand_in.id_token(header={"typ": "at+jwt"}))


async def test_token_from_another_issuer_is_refused(
    client: CibaClient, stand_in: StandInIssuer
) -> None:
    with pytest.raises(InvalidIdToken, match="iss"):
        await client.verify_id_token(stand_in.id_token(iss="https://login.example.com"))


async def test_token_for_another_client_is_refused(
    client: CibaClient, stand_in: StandInIssuer
) -> None:
    with pytest.raises(InvalidIdToken, match="aud"):
        await client.verify_id_token(stand_in.id_token(aud="another-client"))


async def test_several_audiences_need_azp_naming_this_client(
    client: CibaClient, stand_in: StandInIssuer
) -> None:
    audiences = [CLIENT_ID, "another-client"]
    with pytest.raises(InvalidIdToken, match="azp"):
        await client.verify_id_token(stand_in.id_token(aud=audiences))
    with pytest.raises(InvalidIdToken, match="azp"):
        await client.verify_id_token(stand_in.id_token(aud=audiences, azp="another-client"))
    claims = await client.verify_id_token(stand_in.id_token(aud=audiences, azp=CLIENT_ID))
    assert claims["azp"] == CLIENT_ID


async def test_expired_token_is_refused_beyond_the_clock_skew(
    client: CibaClient, stand_in: StandInIssuer
) -> None:
    now = int(time.time())
    await client.verify_id_token(stand_in.id_token(exp=now - 10))  # within the 30 s skew
    with pytest.raises(InvalidIdToken, match="exp"):
        await client.verify_id_token(stand_in.id_token(exp=now - 60))


async def test_token_issued_in_the_future_is_refused_beyond_the_clock_skew(
    client: CibaClient, stand_in: StandInIssuer
) -> None:
    now = int(time.time())
    await client.verify_id_token(stand_in.id_token(iat=now + 10))
    with pytest.raises(InvalidIdToken, match="iat"):
        await client.verify_id_token(stand_in.id_token(iat=now + 120))


async def test_at_hash_of_another_access_token_is_refused(
    client: CibaClient, stand_in: StandInIssuer
) -> None:
    token = stand_in.id_token(at_hash=left_half_sha256("another access token"))
    with pytest.raises(InvalidIdToken, match="at_hash"):
        await client.verify_id_token(token, access_token="at-1")


async def test_rt_hash_of_another_refresh_token_is_refused(
    client: CibaClient, stand_in: StandInIssuer
) -> None:
    extra: dict[str, Any] = {RT_HASH_CLAIM: left_half_sha256("another refresh token")}
    token = stand_in.id_token(**extra)
    with pytest.raises(InvalidIdToken, match="rt_hash"):
        await client.verify_id_token(token, refresh_token="rt-1")


async def test_push_requires_at_hash_that_poll_mode_may_omit(
    client: CibaClient, stand_in: StandInIssuer
) -> None:
    token = stand_in.id_token()
    await client.verify_id_token(token, access_token="at-1")
    with pytest.raises(InvalidIdToken, match="at_hash is required"):
        await client.verify_id_token(token, access_token="at-1", hashes_required=True)


async def test_wait_returns_tokens_whose_id_token_names_the_auth_req_id(
    client: CibaClient, stand_in: StandInIssuer
) -> None:
    stand_in.token_answer = (200, stand_in.token_response("req-1"))
    tokens = await client.wait("req-1")
    assert tokens.id_token_claims is not None
    assert tokens.id_token_claims[AUTH_REQ_ID_CLAIM] == "req-1"


@pytest.mark.parametrize("claim", ["req-2", None], ids=["another request's", "missing"])
async def test_wait_refuses_an_id_token_for_another_auth_req_id(
    client: CibaClient, stand_in: StandInIssuer, claim: str | None
) -> None:
    extra: dict[str, Any] = {AUTH_REQ_ID_CLAIM: claim}
    stand_in.token_answer = (200, stand_in.token_response("req-1", **extra))
    with pytest.raises(InvalidIdToken, match="auth_req_id"):
        await client.wait("req-1")


async def test_wait_refuses_tokens_whose_at_hash_does_not_match(
    client: CibaClient, stand_in: StandInIssuer
) -> None:
    body = stand_in.token_response("req-1")
    body["access_token"] = "a swapped access token"
    stand_in.token_answer = (200, body)
    with pytest.raises(InvalidIdToken, match="at_hash"):
        await client.wait("req-1")
