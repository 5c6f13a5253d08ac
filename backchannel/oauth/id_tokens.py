"""ID tokens: building them (OIDC Core §2, CIBA §10.3.1) and reading back our own (§7.1 hints)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError

from backchannel.errors import InvalidRequest
from backchannel.oauth.algorithms import SIGNING_ALGS
from backchannel.oauth.jwt_claims import JWTRejected, read_header
from backchannel.oauth.keys import KeyStore

AUTH_REQ_ID_CLAIM = "urn:openid:params:jwt:claim:auth_req_id"
RT_HASH_CLAIM = "urn:openid:params:jwt:claim:rt_hash"
ACCESS_TOKEN_TYP = "at+jwt"

_HASHES = {"ES256": hashlib.sha256, "PS256": hashlib.sha256, "RS256": hashlib.sha256}


def token_hash_claim(value: str, alg: str) -> str:
    """Left half of the hash of ``value`` for ``alg``, base64url (OIDC Core §3.1.3.6 at_hash)."""
    digest = _HASHES[alg](value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode("ascii")


def sign_id_token(keys: KeyStore, alg: str, claims: Mapping[str, Any]) -> str:
    key = keys.signing_key(alg)
    header = {"alg": alg, "kid": key.kid, "typ": "JWT"}
    return jwt.encode(header, dict(claims), key, algorithms=[alg])


def verify_own_id_token(
    keys: KeyStore, token: str, *, issuer: str, client_id: str
) -> dict[str, Any]:
    """Claims of an ID token this server issued to ``client_id`` (for id_token_hint, CIBA §7.1).

    The signature (active or previous key), ``iss`` and ``aud`` are checked;
    expiry is not, since a hint may be an expired ID token.
    """
    try:
        read_header(token)
        decoded = jwt.decode(token, keys.public_keyset(), algorithms=list(SIGNING_ALGS))
    except (JWTRejected, JoseError, ValueError, TypeError, KeyError):
        raise InvalidRequest("id_token_hint is not an ID token issued by this server") from None
    if str(decoded.header.get("typ", "JWT")).lower() == ACCESS_TOKEN_TYP:
        raise InvalidRequest("id_token_hint is an access token, not an ID token")
    claims = decoded.claims
    if claims.get("iss") != issuer:
        raise InvalidRequest("id_token_hint was issued by another issuer")
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if client_id not in audiences:
        raise InvalidRequest("id_token_hint was issued to another client")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise InvalidRequest("id_token_hint has no subject")
    return claims
