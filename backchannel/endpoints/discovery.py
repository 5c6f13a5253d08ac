"""Provider metadata (OIDC Discovery §3, RFC 8414 §2, CIBA §4) and the JWK Set.

Every URL comes from the configured issuer, never from the request's Host
header, so a forged Host cannot make the server advertise someone else's
endpoints.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from backchannel.db.authorization_types import select_authorization_schemas
from backchannel.db.clients import CIBA_GRANT
from backchannel.db.pool import Queryable
from backchannel.endpoints.request_context import services_of
from backchannel.oauth.algorithms import CLIENT_ASSERTION_ALGS, REQUEST_OBJECT_ALGS, SIGNING_ALGS
from backchannel.oauth.assurance import ACR_VALUES_SUPPORTED
from backchannel.oauth.authorization_details import BUILT_IN_TYPES
from backchannel.oauth.dpop import DPOP_ALGS
from backchannel.responses import JSONResponse
from backchannel.settings import Settings

# The client authentication methods a client may register (see the clients table).
CLIENT_AUTH_METHODS: tuple[str, ...] = (
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
    "tls_client_auth",
    "self_signed_tls_client_auth",
)
SCOPES: tuple[str, ...] = ("openid", "profile", "email", "phone", "offline_access")
CLAIMS: tuple[str, ...] = (
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "acr",
    "amr",
    "at_hash",
    "urn:openid:params:jwt:claim:auth_req_id",
    "urn:openid:params:jwt:claim:rt_hash",
    "name",
    "email",
    "phone_number",
)

METADATA_CACHE = "public, max-age=300"
# A rotation signs with the new key at once, so keep the window in which a
# cached JWK Set lacks it short (verifiers should also refetch on an unknown kid).
JWKS_CACHE = "public, max-age=60"


def provider_metadata(settings: Settings) -> dict[str, Any]:
    """The OpenID Provider Configuration document."""
    auth_methods = list(CLIENT_AUTH_METHODS)
    auth_algs = list(CLIENT_ASSERTION_ALGS)
    return {
        "issuer": settings.issuer,
        # No authorization_endpoint: there is no browser flow. For the same reason
        # response_types_supported (required by OIDC Discovery §3) is empty, the
        # truthful value: no front-channel response type is supported. Tokens only
        # come from the token endpoint, via the CIBA and refresh_token grants.
        "response_types_supported": [],
        "token_endpoint": settings.token_endpoint,
        "backchannel_authentication_endpoint": settings.backchannel_endpoint,
        "jwks_uri": settings.jwks_uri,
        "userinfo_endpoint": settings.userinfo_endpoint,
        "revocation_endpoint": settings.revocation_endpoint,
        "introspection_endpoint": settings.introspection_endpoint,
        "grant_types_supported": [CIBA_GRANT, "refresh_token"],
        "backchannel_token_delivery_modes_supported": ["poll", "ping", "push"],
        "backchannel_authentication_request_signing_alg_values_supported": list(
            REQUEST_OBJECT_ALGS
        ),
        "backchannel_user_code_parameter_supported": True,
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": auth_algs,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_signing_alg_values_supported": auth_algs,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_signing_alg_values_supported": auth_algs,
        "id_token_signing_alg_values_supported": list(SIGNING_ALGS),
        "subject_types_supported": ["public"],
        "scopes_supported": list(SCOPES),
        "claims_supported": list(CLAIMS),
        # The levels acr_values may ask for and ID tokens state (docs/relying-parties.md).
        "acr_values_supported": list(ACR_VALUES_SUPPORTED),
        "claims_parameter_supported": False,
        # Its default is true; there is no authorization endpoint to take a request_uri.
        "request_uri_parameter_supported": False,
        # Sender-constrained tokens: DPoP (RFC 9449 §5.1) and mutual TLS (RFC 8705 §3.3, §5).
        "dpop_signing_alg_values_supported": list(DPOP_ALGS),
        "tls_client_certificate_bound_access_tokens": True,
        "mtls_endpoint_aliases": settings.mtls_endpoint_aliases(),
    }


async def openid_configuration(request: Request) -> Response:
    services = services_of(request)
    metadata = provider_metadata(services.settings)
    metadata["authorization_details_types_supported"] = await _authorization_types(services.pool)
    return JSONResponse(metadata, headers={"Cache-Control": METADATA_CACHE})


async def _authorization_types(pool: Queryable) -> list[str]:
    """The built-in RFC 9396 types and the operator's; the built-in ones alone while the
    database is unreachable (discovery stays up: clients fetch it when they start)."""
    try:
        registered = await select_authorization_schemas(pool)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        registered = {}
    return [*BUILT_IN_TYPES, *sorted(registered)]


async def jwks(request: Request) -> Response:
    keys = services_of(request).keys
    return JSONResponse(keys.public_jwks(), headers={"Cache-Control": JWKS_CACHE})
