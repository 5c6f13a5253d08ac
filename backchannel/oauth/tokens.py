"""Token issuance (RFC 6749 §5.1, CIBA §11) and reading back our own access tokens.

Access tokens are JWTs per RFC 9068, signed with ``ACCESS_TOKEN_ALG``, their
``jti`` recorded so that revocation and introspection see them. Refresh tokens
are opaque random values stored as hashes. Times come from the database clock
(the rows' ``created_at`` / ``expires_at``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from joserfc import jwt
from joserfc.errors import JoseError

from backchannel.db.audit import insert_audit_event
from backchannel.db.clients import Client
from backchannel.db.tokens import (
    AccessTokenRecord,
    insert_access_token,
    insert_refresh_token,
    select_access_token,
    select_refresh_token,
)
from backchannel.db.users import select_user
from backchannel.oauth.algorithms import ACCESS_TOKEN_ALG
from backchannel.oauth.id_tokens import (
    ACCESS_TOKEN_TYP,
    AUTH_REQ_ID_CLAIM,
    RT_HASH_CLAIM,
    sign_id_token,
    token_hash_claim,
)
from backchannel.oauth.keys import KeyStore
from backchannel.oauth.secrets import hash_secret, new_secret
from backchannel.oauth.services import Services

GRANT_CIBA = "ciba"
GRANT_REFRESH = "refresh_token"


def _epoch(at: datetime) -> int:
    return int(at.timestamp())


async def issue_tokens(
    services: Services,
    conn: asyncpg.Connection,
    *,
    client: Client,
    user_id: int,
    subject: str,
    scope: Sequence[str],
    auth_time: datetime,
    auth_request_id: int | None = None,
    auth_req_id: str | None = None,
    acr: str | None = None,
    family_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """The token response body (RFC 6749 §5.1 with an ID token, CIBA §11).

    Runs inside the caller's transaction on ``conn``. A refresh token is issued
    only to a client allowed the refresh_token grant.
    """
    return await issue_token_set(
        services,
        conn,
        client=client,
        user_id=user_id,
        subject=subject,
        scope=scope,
        auth_time=auth_time,
        auth_request_id=auth_request_id,
        auth_req_id=auth_req_id,
        acr=acr,
        family_id=family_id,
        grant=GRANT_REFRESH if family_id is not None else GRANT_CIBA,
    )


async def issue_token_set(
    services: Services,
    conn: asyncpg.Connection,
    *,
    client: Client,
    user_id: int,
    subject: str,
    scope: Sequence[str],
    auth_time: datetime,
    grant: str,
    auth_request_id: int | None = None,
    auth_req_id: str | None = None,
    acr: str | None = None,
    family_id: uuid.UUID | None = None,
    refresh_scope: Sequence[str] | None = None,
) -> dict[str, Any]:
    """``issue_tokens`` with the grant named and, for refresh (RFC 6749 §6), the
    refresh token's own scope, which stays that of the original grant."""
    settings = services.settings
    scope = list(dict.fromkeys(scope))
    access_ttl = client.access_token_ttl or settings.access_token_ttl
    refresh_token: str | None = None
    if client.may_refresh:
        refresh_token = new_secret()
        family_id = family_id or uuid.uuid4()

    jti = new_secret(16)
    record = await insert_access_token(
        conn,
        jti=jti,
        family_id=family_id,
        client_id=client.client_id,
        user_id=user_id,
        scope=scope,
        ttl=access_ttl,
        auth_request_id=auth_request_id,
    )
    issued_at = _epoch(record.created_at)
    access_claims: dict[str, Any] = {
        "iss": settings.issuer,
        "sub": subject,
        "aud": settings.issuer,
        "client_id": client.client_id,
        "exp": _epoch(record.expires_at),
        "iat": issued_at,
        "jti": jti,
        "scope": " ".join(scope),
        "auth_time": _epoch(auth_time),
    }
    if acr is not None:
        access_claims["acr"] = acr
    at_key = services.keys.signing_key(ACCESS_TOKEN_ALG)
    access_token = jwt.encode(
        {"alg": ACCESS_TOKEN_ALG, "kid": at_key.kid, "typ": ACCESS_TOKEN_TYP},
        access_claims,
        at_key,
        algorithms=[ACCESS_TOKEN_ALG],
    )

    if refresh_token is not None:
        assert family_id is not None
        await insert_refresh_token(
            conn,
            token_hash=hash_secret(refresh_token),
            family_id=family_id,
            client_id=client.client_id,
            user_id=user_id,
            auth_request_id=auth_request_id,
            scope=list(refresh_scope) if refresh_scope is not None else scope,
            auth_time=auth_time,
            ttl=client.refresh_token_ttl or settings.refresh_token_ttl,
            max_age=settings.refresh_token_max_age,
        )

    id_alg = client.id_token_signed_response_alg
    id_claims: dict[str, Any] = {
        "iss": settings.issuer,
        "sub": subject,
        "aud": client.client_id,
        "exp": issued_at + settings.id_token_ttl,
        "iat": issued_at,
        "auth_time": _epoch(auth_time),
        "at_hash": token_hash_claim(access_token, id_alg),
    }
    if acr is not None:
        id_claims["acr"] = acr
    if auth_req_id is not None:
        id_claims[AUTH_REQ_ID_CLAIM] = auth_req_id
    if refresh_token is not None:
        id_claims[RT_HASH_CLAIM] = token_hash_claim(refresh_token, id_alg)

    body: dict[str, Any] = {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": access_ttl,
        "id_token": sign_id_token(services.keys, id_alg, id_claims),
    }
    if refresh_token is not None:
        body["refresh_token"] = refresh_token
    body["scope"] = " ".join(scope)

    detail: dict[str, Any] = {"grant": grant, "jti": jti}
    if family_id is not None:
        detail["family_id"] = str(family_id)
    await insert_audit_event(
        conn,
        "token_issued",
        client_id=client.client_id,
        user_id=user_id,
        auth_request_id=auth_request_id,
        detail=detail,
    )
    return body


def read_access_token(keys: KeyStore, token: str, *, issuer: str) -> dict[str, Any] | None:
    """Claims of an access token this server signed (RFC 9068 §4), or None.

    Checks the signature, ``typ``, ``iss`` and ``aud`` only: expiry and revocation are
    the database's to judge (``select_access_token``).
    """
    try:
        decoded = jwt.decode(token, keys.public_keyset(), algorithms=[ACCESS_TOKEN_ALG])
    except (JoseError, ValueError, TypeError, KeyError):
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


INACTIVE: dict[str, Any] = {"active": False}


async def introspect_token(
    services: Services, client: Client, token: str, token_type_hint: str | None
) -> dict[str, Any]:
    """RFC 7662 §2.2 response for ``token`` as seen by ``client`` (its own tokens only).

    ``token_type`` is given for access tokens only: RFC 7662 borrows it from
    RFC 6749 §7.1, which types access tokens, not refresh tokens.
    """
    if token_type_hint == "refresh_token":
        order = (_introspect_refresh_token, _introspect_access_token)
    else:
        order = (_introspect_access_token, _introspect_refresh_token)
    for attempt in order:
        body = await attempt(services, client, token)
        if body is not None:
            return body
    return dict(INACTIVE)


async def _introspect_access_token(
    services: Services, client: Client, token: str
) -> dict[str, Any] | None:
    active = await find_active_access_token(services, token, client_id=client.client_id)
    if active is None:
        return None
    user = await select_user(services.pool, active.record.user_id)
    if user is None or user.disabled:
        return None
    claims = active.claims
    return {
        "active": True,
        "scope": " ".join(active.record.scope),
        "client_id": active.record.client_id,
        "sub": claims["sub"],
        "aud": claims["aud"],
        "iss": claims["iss"],
        "exp": _epoch(active.record.expires_at),
        "iat": _epoch(active.record.created_at),
        "jti": active.record.jti,
        "token_type": "Bearer",
    }


async def _introspect_refresh_token(
    services: Services, client: Client, token: str
) -> dict[str, Any] | None:
    found = await select_refresh_token(services.pool, hash_secret(token))
    if (
        found is None
        or found.client_id != client.client_id
        or found.rotated_at is not None
        or found.revoked_at is not None
        or found.expired
        or found.user_disabled
    ):
        return None
    return {
        "active": True,
        "scope": " ".join(found.scope),
        "client_id": found.client_id,
        "sub": found.subject,
        "iss": services.settings.issuer,
        "exp": _epoch(found.expires_at),
        "iat": _epoch(found.created_at),
    }
