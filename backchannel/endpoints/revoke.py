"""The revocation endpoint (RFC 7009 §2): the client authenticates, names a token, gets 200."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from backchannel.endpoints.client_certificate import authenticate_request_client
from backchannel.endpoints.forms import read_form
from backchannel.endpoints.request_context import services_of
from backchannel.errors import NO_STORE, InvalidRequest
from backchannel.oauth.token_revocation import revoke_token


async def revoke(request: Request) -> Response:
    services = services_of(request)
    form = await read_form(request, services.settings.max_body_bytes)
    client = await authenticate_request_client(request, form, services.settings.revocation_endpoint)
    token = form.get("token")
    if token is None:
        raise InvalidRequest("token is required")
    await revoke_token(services, client, token, form.get("token_type_hint"))
    # Unknown tokens and other clients' tokens get the same answer (RFC 7009 §2.2).
    return Response(status_code=200, headers=NO_STORE)
