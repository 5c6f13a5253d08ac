"""Our own access tokens read back: the JWT checked, then its row (expiry, revocation)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError

from backchannel.db.tokens import AccessTokenRecord, select_access_token
from backchannel.oauth.algorithms import ACCESS_TOKEN_ALG
from backchannel.oauth.id_tokens import ACCESS_TOKEN_TYP
from backchannel.oauth.jwt_claims import JWTRejected, read_header
from backchannel.oauth.keys import KeyStore
from backchannel.oauth.services import Services


def read_access_token(keys: KeyStore, token: str, *, issuer: str) -> dict[str, Any] | None:
    """Claims of an access token this server signed (RFC 9068 §4), or None.

    Checks the signature, ``typ``, ``iss`` and ``aud`` only: expiry and revocation are
    the database's to judge (``select_access_token``).
    """
    try:
        read_header(token)
        decoded = jwt.decode(token, keys.public_keyset(), algorithms=[ACCESS_TOKEN_ALG])
    except (JWTRejected, JoseError, ValueError, TypeError, KeyError):
        return None
    claims = decoded.claims
    if str(decoded.header.get("typ", "")).lower() not in (ACCESS_TOKEN_TYP, "application/at+jwt"):
        return None
    if claims.get("iss") != issuer:
        return None
    aud = claims.get("aud")
    if issuer not in (aud if isinstance(aud, list) else [aud]):
        return None
    for name in ("jti", "sub", "client_id"):
        if not isinstance(claims.get(name), str):
            return None
    return claims


@dataclass(frozen=True)
class ActiveAccessToken:
    claims: dict[str, Any]
    record: AccessTokenRecord


async def find_active_access_token(
    services: Services, token: str, *, client_id: str | None = None
) -> ActiveAccessToken | None:
    """Our access token, unexpired and unrevoked (and issued to ``client_id`` if given)."""
    claims = read_access_token(services.keys, token, issuer=services.settings.issuer)
    if claims is None:
        return None
    if client_id is not None and claims["client_id"] != client_id:
        return None
    record = await select_access_token(services.pool, claims["jti"])
    if record is None or not record.active or record.client_id != claims["client_id"]:
        return None
    return ActiveAccessToken(claims, record)
