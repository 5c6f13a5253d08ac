"""POST /token: the CIBA grant (poll mode, with optional long polling) and refresh tokens.

A ``DPoP`` header (RFC 9449) or a TLS client certificate (RFC 8705) binds the
tokens issued; see ``oauth/sender_constraint.py``.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from backchannel.db.clients import CIBA_GRANT, Client
from backchannel.endpoints.client_certificate import (
    authenticate_request_client,
    presented_certificate,
)
from backchannel.endpoints.forms import read_form
from backchannel.endpoints.request_context import services_of
from backchannel.errors import (
    NO_STORE,
    InvalidRequest,
    OAuthError,
    UnauthorizedClient,
    UnsupportedGrantType,
    oauth_error_response,
)
from backchannel.oauth.polling import poll_for_tokens
from backchannel.oauth.refresh import refresh_grant
from backchannel.oauth.sender_constraint import TokenBinding, bind_token_request
from backchannel.responses import JSONResponse


def requested_wait(prefer: str | None, limit: int) -> int:
    """The ``wait`` preference of an RFC 7240 ``Prefer`` header, capped at ``limit``."""
    if not prefer:
        return 0
    for preference in prefer.replace(";", ",").split(","):
        name, _, value = preference.strip().partition("=")
        if name.strip().lower() == "wait":
            value = value.strip().strip('"')
            if value.isascii() and value.isdigit():
                # Leading zeros do not count; more than six digits is more than any limit.
                digits = value.lstrip("0") or "0"
                return min(int(digits) if len(digits) <= 6 else limit, limit)
    return 0


async def token(request: Request) -> Response:
    services = services_of(request)
    settings = services.settings
    form = await read_form(request, settings.max_body_bytes)
    client = await authenticate_request_client(request, form, settings.token_endpoint)
    grant_type = form.get("grant_type")
    if grant_type is None:
        raise InvalidRequest("grant_type is required")
    if grant_type not in (CIBA_GRANT, "refresh_token"):
        raise UnsupportedGrantType(f"grant_type {grant_type[:64]!r} is not supported")
    headers = dict(NO_STORE)
    if grant_type == CIBA_GRANT:
        if not client.uses_ciba:
            raise UnauthorizedClient("this client is not registered for the CIBA grant")
        if client.backchannel_token_delivery_mode == "push":
            raise UnauthorizedClient("push-mode clients receive tokens at their endpoint")
        auth_req_id = form.get("auth_req_id")
        if auth_req_id is None:
            raise InvalidRequest("auth_req_id is required")
        binding = await _binding(request, client)
        headers.update(binding.headers())
        wait = requested_wait(request.headers.get("prefer"), settings.long_poll_max)
        if wait:
            headers["Preference-Applied"] = f"wait={wait}"
        if wait:
            gone = asyncio.ensure_future(_disconnect(request))
            try:
                answer = await poll_for_tokens(
                    services, client, auth_req_id, wait=wait, client_gone=gone, binding=binding
                )
            finally:
                gone.cancel()
        else:
            answer = await poll_for_tokens(services, client, auth_req_id, binding=binding)
        if isinstance(answer, OAuthError):
            return oauth_error_response(request, answer, headers)
        body = answer
    else:
        binding = await _binding(request, client)
        headers.update(binding.headers())
        body = await refresh_grant(services, client, form, binding)
    return JSONResponse(body, headers=headers)


async def _disconnect(request: Request) -> None:
    """Returns when the client closes the connection (its body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _binding(request: Request, client: Client) -> TokenBinding:
    """What the tokens will be bound to: the DPoP proof's key, the TLS certificate."""
    return await bind_token_request(
        services_of(request),
        client,
        proofs=request.headers.getlist("dpop"),
        certificate=await presented_certificate(request),
    )
