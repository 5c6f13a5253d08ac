"""The UserInfo endpoint (OIDC Core §5.3) behind an access token (RFC 6750, RFC 9449).

A bearer token comes in the Authorization header or, for POST, as the
``access_token`` form field (RFC 6750 §2.1, §2.2); never in the query string,
and never both ways at once. A DPoP-bound token comes only as
``Authorization: DPoP <token>`` with a ``DPoP`` proof over it (RFC 9449 §7);
a certificate-bound token only over mutual TLS with the same certificate
(RFC 8705 §3). Claims are released by scope (OIDC Core §5.4).
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from backchannel.db.users import User, select_user
from backchannel.endpoints.client_certificate import presented_certificate
from backchannel.endpoints.forms import FORM_TYPE, read_form
from backchannel.endpoints.request_context import services_of
from backchannel.errors import (
    NO_STORE,
    InsufficientScope,
    InvalidRequest,
    clean_description,
)
from backchannel.oauth.access_tokens import find_active_access_token
from backchannel.oauth.sender_constraint import check_token_presentation, refused_token
from backchannel.responses import JSONResponse

# RFC 6750 §2.1 b64token.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def _challenge(error: str, description: str, **extra: str) -> dict[str, str]:
    params = [f'error="{error}"', f'error_description="{clean_description(description)}"']
    params += [f'{name}="{value}"' for name, value in extra.items()]
    return {"WWW-Authenticate": "Bearer " + ", ".join(params)}


def _malformed(description: str) -> InvalidRequest:
    return InvalidRequest(description, headers=_challenge("invalid_request", description))


async def _presented_token(request: Request, max_bytes: int) -> tuple[str, str] | None:
    """The scheme (``Bearer`` or ``DPoP``) and the token as sent, None if the request
    carries none."""
    headers = request.headers.getlist("authorization")
    if len(headers) > 1:
        raise _malformed("more than one Authorization header")
    from_header: str | None = None
    if headers:
        scheme, _, value = headers[0].strip().partition(" ")
        if scheme.lower() in ("bearer", "dpop"):
            value = value.strip()
            if not _B64TOKEN.fullmatch(value):
                raise _malformed("the access token is malformed")
            if scheme.lower() == "dpop":
                return "DPoP", value
            from_header = value
    from_body: str | None = None
    content_type = request.headers.get("content-type", "")
    if request.method == "POST" and content_type.split(";", 1)[0].strip().lower() == FORM_TYPE:
        from_body = (await read_form(request, max_bytes)).get("access_token")
    if from_header is not None and from_body is not None:
        raise _malformed("the access token was sent in more than one way")
    token = from_header if from_header is not None else from_body
    return None if token is None else ("Bearer", token)


def user_claims(user: User, scope: tuple[str, ...]) -> dict[str, Any]:
    """Standard claims (OIDC Core §5.1) released by scope; absent values are omitted."""
    claims: dict[str, Any] = {"sub": user.subject}
    if "profile" in scope and user.display_name:
        claims["name"] = user.display_name
    if "email" in scope and user.email:
        claims["email"] = user.email
    if "phone" in scope and user.phone_number:
        claims["phone_number"] = user.phone_number
    return claims


async def userinfo(request: Request) -> Response:
    services = services_of(request)
    settings = services.settings
    presented = await _presented_token(request, settings.max_body_bytes)
    if presented is None:
        # No credentials at all: a bare challenge, no error code (RFC 6750 §3.1).
        return Response(status_code=401, headers={**NO_STORE, "WWW-Authenticate": "Bearer"})
    scheme, token = presented
    active = await find_active_access_token(services, token)
    if active is None:
        raise refused_token(scheme, "the access token is invalid, expired or revoked")
    client = await services.clients.get(active.record.client_id)
    if client is None or client.disabled:
        raise refused_token(scheme, "the access token is no longer valid")
    headers = await check_token_presentation(
        services,
        client,
        active.record,
        scheme=scheme,
        token=token,
        proofs=request.headers.getlist("dpop"),
        method=request.method,
        urls=(settings.userinfo_endpoint, settings.mtls_endpoint_aliases()["userinfo_endpoint"]),
        certificate=await presented_certificate(request),
    )
    if "openid" not in active.record.scope:
        description = "the access token was not granted the openid scope"
        raise InsufficientScope(
            description, headers=_challenge("insufficient_scope", description, scope="openid")
        )
    user = await select_user(services.pool, active.record.user_id)
    if user is None or user.disabled:
        raise refused_token(scheme, "the access token is no longer valid")
    return JSONResponse(user_claims(user, active.record.scope), headers={**NO_STORE, **headers})
