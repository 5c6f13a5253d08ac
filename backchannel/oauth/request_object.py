"""Signed authentication requests (CIBA §7.1.1, FAPI-CIBA §5.2.2).

The request parameters travel as claims of a compact JWS signed by the
client with an asymmetric algorithm. Every refusal is ``invalid_request``.
"""

from __future__ import annotations

from typing import Any

from backchannel.db.clients import Client
from backchannel.errors import InvalidRequest
from backchannel.oauth import fapi_ciba
from backchannel.oauth.algorithms import (
    REQUEST_OBJECT_ALGS,
    REQUEST_OBJECT_ALGS_BY_REGISTRATION,
)
from backchannel.oauth.fapi_ciba import request_signing_algs
from backchannel.oauth.jwt_claims import (
    MAX_JTI_LENGTH,
    JWTRejected,
    check_audience,
    check_times,
    read_header,
    record_first_use,
    string_claim,
)
from backchannel.oauth.remote_jwks import verify_client_jwt
from backchannel.oauth.services import Services

JTI_PURPOSE = "request_object"


def allowed_request_algs(client: Client) -> tuple[str, ...]:
    """The registered signing alg when there is one (if acceptable at all), else the
    defaults; ES256 or PS256 only under the FAPI-CIBA profile."""
    registered = client.backchannel_authentication_request_signing_alg
    if registered is None:
        return request_signing_algs(client, REQUEST_OBJECT_ALGS)
    allowed = (registered,) if registered in REQUEST_OBJECT_ALGS_BY_REGISTRATION else ()
    return request_signing_algs(client, allowed)


async def verify_request_object(
    services: Services, client: Client, request_jwt: str
) -> dict[str, Any]:
    """The verified claims of ``request_jwt``, the request's parameters among them."""
    try:
        alg = read_header(request_jwt)["alg"]
        allowed = allowed_request_algs(client)
        if alg not in allowed:
            if fapi_ciba.applies(client) and alg not in fapi_ciba.ALGS:
                raise InvalidRequest(f"{fapi_ciba.SIGNED_REQUESTS} (it is signed with {alg})")
            raise JWTRejected(f"signing algorithm {alg} is not allowed for this client")
        claims = await verify_client_jwt(services, client, request_jwt, allowed)
        _check_claims(services, client, claims)
    except JWTRejected as exc:
        raise InvalidRequest(f"request object refused: {exc}") from None
    fresh = await record_first_use(
        services.pool,
        claims,
        issuer=client.client_id,
        purpose=JTI_PURPOSE,
        skew=services.settings.clock_skew,
    )
    if not fresh:
        raise InvalidRequest("request object refused: its jti was already used")
    return claims


def _check_claims(services: Services, client: Client, claims: dict[str, Any]) -> None:
    settings = services.settings
    if claims.get("iss") != client.client_id:
        raise JWTRejected("iss must be the client_id")
    check_audience(
        claims, {settings.issuer, settings.backchannel_endpoint, settings.token_endpoint}
    )
    check_times(
        claims,
        skew=settings.clock_skew,
        require=("exp", "iat", "nbf"),
        max_lifetime=settings.request_object_max_lifetime,
    )
    string_claim(claims, "jti", max_length=MAX_JTI_LENGTH)
