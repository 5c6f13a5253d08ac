"""DPoP proof verification (RFC 9449 §4.3) and the replay cache shared by replicas."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import pytest
from joserfc.jwk import OKPKey, RSAKey

from backchannel.errors import InvalidDPoPProof, UseDPoPNonce
from backchannel.oauth.dpop import (
    DPoPNonces,
    normalise_htu,
    record_dpop_jti,
    verify_dpop_proof,
)
from tests.support.dpop import DPoPKey

TOKEN_URL = "https://login.example.com/token"


def verify(proof: str, **kwargs: Any) -> Any:
    arguments: dict[str, Any] = {"method": "POST", "url": TOKEN_URL, "skew": 60, **kwargs}
    return verify_dpop_proof(proof, **arguments)


@pytest.mark.parametrize(
    "key",
    [
        DPoPKey(),
        DPoPKey(RSAKey.generate_key(2048, private=True), "PS256"),
        DPoPKey(OKPKey.generate_key("Ed25519", private=True), "EdDSA"),
    ],
    ids=["ES256", "PS256", "EdDSA"],
)
def test_a_valid_proof_yields_the_keys_thumbprint(key: DPoPKey) -> None:
    proof = verify(key.proof("POST", TOKEN_URL))
    assert proof.jkt == key.jkt


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"htm": "GET"}, "method"),
        ({"htu": "https://login.example.com/userinfo"}, "URL"),
        ({"htu": "https://evil.example.com/token"}, "URL"),
        ({"iat": -300}, "stale"),  # seconds from when the test runs
        ({"iat": +300}, "future"),
        ({"iat": "now"}, "iat"),
        ({"jti": None}, "jti"),
    ],
)
def test_a_proof_that_does_not_bind_this_request_is_refused(
    claims: dict[str, Any], reason: str
) -> None:
    if isinstance(claims.get("iat"), int):  # relative to now, not to when tests were collected
        claims = {**claims, "iat": int(time.time()) + claims["iat"]}
    with pytest.raises(InvalidDPoPProof, match=reason):
        verify(DPoPKey().proof("POST", TOKEN_URL, **claims))


def test_htu_is_compared_after_normalisation_without_query_or_fragment() -> None:
    assert normalise_htu("HTTPS://Login.Example.com:443/token?x=1#f") == TOKEN_URL
    assert normalise_htu("http://h:80") == "http://h/"
    assert normalise_htu("https://h:8443/t") == "https://h:8443/t"
    key = DPoPKey()
    verify(key.proof("POST", "https://LOGIN.example.com:443/token?ignored=1"))


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"typ": "JWT"}, "typ"),
        ({"jwk": None}, "jwk"),
        ({"jwk": {"kty": "oct", "k": "AAAA"}}, "jwk"),
    ],
)
def test_a_proof_with_a_wrong_header_is_refused(header: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidDPoPProof, match=reason):
        verify(DPoPKey().proof("POST", TOKEN_URL, header=header))


def test_a_proof_carrying_its_private_key_is_refused() -> None:
    key = DPoPKey()
    proof = key.proof("POST", TOKEN_URL, header={"jwk": key.key.as_dict(private=True)})
    with pytest.raises(InvalidDPoPProof, match="private"):
        verify(proof)


def test_a_proof_signed_by_another_key_than_its_jwk_is_refused() -> None:
    honest, thief = DPoPKey(), DPoPKey()
    proof = thief.proof("POST", TOKEN_URL, header={"jwk": honest.key.as_dict(private=False)})
    with pytest.raises(InvalidDPoPProof, match="signature"):
        verify(proof)


def test_an_algorithm_outside_the_list_is_refused() -> None:
    key = DPoPKey(RSAKey.generate_key(2048, private=True), "RS256")
    with pytest.raises(InvalidDPoPProof, match="signed with"):
        verify(key.proof("POST", TOKEN_URL))


def test_at_a_resource_ath_must_match_the_access_token() -> None:
    key = DPoPKey()
    url = "https://login.example.com/userinfo"
    verify(key.proof("GET", url, access_token="at-1"), method="GET", url=url, access_token="at-1")
    for proof in (key.proof("GET", url, access_token="at-2"), key.proof("GET", url)):
        with pytest.raises(InvalidDPoPProof, match="ath"):
            verify(proof, method="GET", url=url, access_token="at-1")


def test_a_required_nonce_is_asked_for_then_accepted() -> None:
    nonces = DPoPNonces(b"k" * 32)
    key = DPoPKey()
    with pytest.raises(UseDPoPNonce) as asked:
        verify(key.proof("POST", TOKEN_URL), nonces=nonces)
    nonce = asked.value.headers["DPoP-Nonce"]
    verify(key.proof("POST", TOKEN_URL, nonce=nonce), nonces=nonces)


def test_nonces_expire_after_the_next_window_and_come_from_this_servers_key() -> None:
    nonces, other = DPoPNonces(b"k" * 32, window=60), DPoPNonces(b"x" * 32, window=60)
    now = 1_000_000.0
    nonce = nonces.current(now)
    assert nonces.is_fresh(nonce, now + 60)
    assert not nonces.is_fresh(nonce, now + 180)
    assert not other.is_fresh(nonce, now)
    assert not nonces.is_fresh(None, now)


async def test_a_replayed_proof_is_refused_on_every_replica(db: asyncpg.Connection) -> None:
    proof = verify(DPoPKey().proof("POST", TOKEN_URL))
    await record_dpop_jti(db, proof, purpose="token", skew=60)
    with pytest.raises(InvalidDPoPProof, match="used already"):
        await record_dpop_jti(db, proof, purpose="token", skew=60)
