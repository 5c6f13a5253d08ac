"""The introspection endpoint (RFC 7662 §2).

A client may introspect the tokens issued to itself; for any other token,
and for a spent, expired or revoked one, the answer is ``{"active": false}``
(RFC 7662 §2.2, §4), so the endpoint cannot be used to probe for tokens.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from backchannel.endpoints.client_certificate import authenticate_request_client
from backchannel.endpoints.forms import read_form
from backchannel.endpoints.request_context import services_of
from backchannel.errors import NO_STORE, InvalidRequest
from backchannel.oauth.introspection import introspect_token
from backchannel.responses import JSONResponse


async def introspect(request: Request) -> Response:
    services = services_of(request)
    form = await read_form(request, services.settings.max_body_bytes)
    client = await authenticate_request_client(
        request, form, services.settings.introspection_endpoint
    )
    token = form.get("token")
    if token is None:
        raise InvalidRequest("token is required")
    body = await introspect_token(services, client, token, form.get("token_type_hint"))
    return JSONResponse(body, headers=NO_STORE)
