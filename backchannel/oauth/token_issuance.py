"""Token issuance (RFC 6749 §5.1, CIBA §11): the access token, the refresh token and the
ID token of one grant, stored and audited in the caller's transaction.

Access tokens are JWTs per RFC 9068, signed with ``ACCESS_TOKEN_ALG``, their
``jti`` recorded so that revocation and introspection see them. Refresh tokens
are opaque random values stored as hashes. Times come from the database clock:
the rows' ``created_at`` / ``expires_at``, or for a poll's redemption the time
the poll read the approval, stored as the rows' times.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from joserfc import jwt

from backchannel.db.auth_requests import Redemption
from backchannel.db.clients import Client
from backchannel.db.tokens import (
    NewRefreshToken,
    NewTokenSet,
    insert_token_set,
    redeem_into_token_set,
)
from backchannel.oauth.algorithms import ACCESS_TOKEN_ALG
from backchannel.oauth.assurance import acr_claim
from backchannel.oauth.id_tokens import (
    ACCESS_TOKEN_TYP,
    AUTH_REQ_ID_CLAIM,
    RT_HASH_CLAIM,
    sign_id_token,
    token_hash_claim,
)
from backchannel.oauth.secrets import hash_secret, new_secret
from backchannel.oauth.sender_constraint import UNBOUND, TokenBinding
from backchannel.oauth.services import Services
from backchannel.settings import Settings

GRANT_CIBA = "ciba"
GRANT_REFRESH = "refresh_token"


@dataclass(frozen=True)
class Grant:
    """What a token response is issued for: one user's approval, as granted to one client.

    ``auth_req_id`` is the CIBA request the tokens answer (the ID token names it,
    CIBA §10.3.1); ``family_id`` the refresh token family a refresh continues;
    ``refresh_scope`` the scope a rotated refresh token keeps, that of the
    original grant (RFC 6749 §6), when the access token's is narrowed.
    """

    client: Client
    user_id: int
    subject: str
    scope: tuple[str, ...]
    auth_time: datetime
    auth_request_id: int | None = None
    auth_req_id: str | None = None
    acr: str | None = None
    amr: tuple[str, ...] | None = None  # RFC 8176, how the user approved
    family_id: uuid.UUID | None = None
    refresh_scope: tuple[str, ...] | None = None
    # RFC 9396: the details the user approved; the access token and the response carry them.
    authorization_details: tuple[dict[str, Any], ...] | None = None

    @classmethod
    def of_redemption(
        cls,
        client: Client,
        redemption: Redemption,
        auth_req_id: str,
        binding: TokenBinding = UNBOUND,
    ) -> Grant:
        """What a redeemed CIBA request grants (at /token, or pushed to the client),
        its tokens bound to ``binding`` (a new refresh token family keeps its DPoP key)."""
        return cls(
            client=client,
            user_id=redemption.user_id,
            subject=redemption.subject,
            scope=redemption.scope,
            auth_time=redemption.decided_at,
            auth_request_id=redemption.id,
            auth_req_id=auth_req_id,
            acr=acr_claim(redemption.acr, redemption.amr),
            amr=redemption.amr,
            authorization_details=redemption.authorization_details,
            binding=binding,
            refresh_jkt=binding.dpop_jkt,
        )

    # What the access token is bound to (DPoP key, TLS certificate); see sender_constraint.py.
    binding: TokenBinding = UNBOUND
    # The DPoP key a new refresh token family is bound to; a refresh keeps its family's.
    refresh_jkt: str | None = None

    @property
    def kind(self) -> str:
        return GRANT_REFRESH if self.family_id is not None else GRANT_CIBA


def epoch(at: datetime) -> int:
    return int(at.timestamp())


async def issue_tokens(
    services: Services, conn: asyncpg.Connection, grant: Grant
) -> dict[str, Any]:
    """The token response body (RFC 6749 §5.1 with an ID token, CIBA §11).

    Runs inside the caller's transaction on ``conn``, the tokens issued at the
    time the database stores them. A refresh token is issued only to a client
    allowed the refresh_token grant.
    """
    tokens = _token_set(services, grant)
    record = await insert_token_set(conn, tokens.rows)
    return _response(services, grant, tokens, record.created_at, record.expires_at)


async def redeem_and_issue(
    services: Services, grant: Grant, issued_at: datetime
) -> dict[str, Any] | None:
    """The token response body for the approved request ``grant`` answers (CIBA §11), or
    None if it was not this call that spent the request (another redemption, a
    revocation or expiry came first: no tokens are stored).

    The tokens are signed first, issued at ``issued_at`` (the database time at which
    the poll found the request approved); the redemption and storing them are then one
    statement.
    """
    assert grant.auth_request_id is not None
    tokens = _token_set(services, grant)
    expires_at = issued_at + timedelta(seconds=tokens.rows.ttl)
    body = _response(services, grant, tokens, issued_at, expires_at)
    if not await redeem_into_token_set(services.pool, tokens.rows, issued_at):
        return None
    return body


@dataclass(frozen=True)
class _TokenSet:
    rows: NewTokenSet
    refresh_token: str | None


def _token_set(services: Services, grant: Grant) -> _TokenSet:
    """New secrets for ``grant`` and what is stored of them."""
    settings, client = services.settings, grant.client
    scope = list(dict.fromkeys(grant.scope))
    # A grant of authorization details (a payment) is used once: no refresh token
    # outlives it (RFC 9396 leaves this to the server; docs/relying-parties.md).
    refresh_token = (
        new_secret() if client.may_refresh and grant.authorization_details is None else None
    )
    family_id = (grant.family_id or uuid.uuid4()) if refresh_token is not None else None
    jti = new_secret(16)
    detail: dict[str, Any] = {"grant": grant.kind, "jti": jti}
    cnf = grant.binding.cnf()
    if cnf is not None:
        detail["cnf"] = cnf
    if family_id is not None:
        detail["family_id"] = str(family_id)
    rows = NewTokenSet(
        jti=jti,
        family_id=family_id,
        client_id=client.client_id,
        user_id=grant.user_id,
        scope=scope,
        ttl=client.access_token_ttl or settings.access_token_ttl,
        auth_request_id=grant.auth_request_id,
        dpop_jkt=grant.binding.dpop_jkt,
        x5t_s256=grant.binding.x5t_s256,
        refresh=(
            NewRefreshToken(
                token_hash=hash_secret(refresh_token),
                scope=list(grant.refresh_scope) if grant.refresh_scope is not None else scope,
                auth_time=grant.auth_time,
                ttl=client.refresh_token_ttl or settings.refresh_token_ttl,
                max_age=settings.refresh_token_max_age,
                dpop_jkt=grant.refresh_jkt,
            )
            if refresh_token is not None
            else None
        ),
        audit_detail=detail,
    )
    return _TokenSet(rows, refresh_token)


def _response(
    services: Services,
    grant: Grant,
    tokens: _TokenSet,
    issued_at: datetime,
    expires_at: datetime,
) -> dict[str, Any]:
    """The signed response for ``tokens``, issued at ``issued_at``."""
    rows, refresh_token = tokens.rows, tokens.refresh_token
    scope = list(rows.scope)
    access_token = _sign_access_token(services, grant, rows.jti, issued_at, expires_at, scope)
    id_claims = _id_token_claims(services.settings, grant, issued_at, access_token, refresh_token)
    body: dict[str, Any] = {
        "access_token": access_token,
        "token_type": grant.binding.token_type,
        "expires_in": rows.ttl,
        "id_token": sign_id_token(
            services.keys, grant.client.id_token_signed_response_alg, id_claims
        ),
    }
    if refresh_token is not None:
        body["refresh_token"] = refresh_token
    body["scope"] = " ".join(scope)
    if grant.authorization_details is not None:
        body["authorization_details"] = list(grant.authorization_details)  # RFC 9396 §7
    return body


def _sign_access_token(
    services: Services,
    grant: Grant,
    jti: str,
    issued_at: datetime,
    expires_at: datetime,
    scope: list[str],
) -> str:
    """The RFC 9068 JWT of a stored access token."""
    issuer = services.settings.issuer
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": grant.subject,
        "aud": issuer,
        "client_id": grant.client.client_id,
        "exp": epoch(expires_at),
        "iat": epoch(issued_at),
        "jti": jti,
        "scope": " ".join(scope),
        "auth_time": epoch(grant.auth_time),
    }
    if grant.acr is not None:
        claims["acr"] = grant.acr
    if grant.amr:
        claims["amr"] = list(grant.amr)
    if grant.authorization_details is not None:
        claims["authorization_details"] = list(grant.authorization_details)
    cnf = grant.binding.cnf()
    if cnf is not None:
        claims["cnf"] = cnf  # RFC 9449 §6.1, RFC 8705 §3.1
    key = services.keys.signing_key(ACCESS_TOKEN_ALG)
    return jwt.encode(
        {"alg": ACCESS_TOKEN_ALG, "kid": key.kid, "typ": ACCESS_TOKEN_TYP},
        claims,
        key,
        algorithms=[ACCESS_TOKEN_ALG],
    )


def _id_token_claims(
    settings: Settings,
    grant: Grant,
    issued_at_time: datetime,
    access_token: str,
    refresh_token: str | None,
) -> dict[str, Any]:
    """OIDC Core §2 claims, with the hashes and request id CIBA §10.3.1 asks for."""
    alg = grant.client.id_token_signed_response_alg
    issued_at = epoch(issued_at_time)
    claims: dict[str, Any] = {
        "iss": settings.issuer,
        "sub": grant.subject,
        "aud": grant.client.client_id,
        "exp": issued_at + settings.id_token_ttl,
        "iat": issued_at,
        "auth_time": epoch(grant.auth_time),
        "at_hash": token_hash_claim(access_token, alg),
    }
    if grant.acr is not None:
        claims["acr"] = grant.acr
    if grant.amr:
        claims["amr"] = list(grant.amr)
    if grant.auth_req_id is not None:
        claims[AUTH_REQ_ID_CLAIM] = grant.auth_req_id
    if refresh_token is not None:
        claims[RT_HASH_CLAIM] = token_hash_claim(refresh_token, alg)
    return claims
