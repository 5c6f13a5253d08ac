"""POST /bc-authorize: the backchannel authentication endpoint (CIBA §7)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from backchannel.endpoints.client_certificate import authenticate_request_client
from backchannel.endpoints.forms import read_form
from backchannel.endpoints.request_context import services_of
from backchannel.errors import NO_STORE
from backchannel.oauth.backchannel_authentication import start_authentication
from backchannel.responses import JSONResponse


async def bc_authorize(request: Request) -> Response:
    services = services_of(request)
    form = await read_form(request, services.settings.max_body_bytes)
    client = await authenticate_request_client(
        request, form, services.settings.backchannel_endpoint
    )
    caller_ip = request.client.host if request.client is not None else None
    body = await start_authentication(services, client, form, caller_ip)
    return JSONResponse(body, headers=NO_STORE)
