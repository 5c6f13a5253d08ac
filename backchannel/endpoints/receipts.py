"""The receipt endpoint: ``POST /receipts`` (docs/audit.md, "Approval receipts").

The client authenticates as at ``/token`` and names ``auth_req_id``; it gets the
server-signed receipt of the device decision on its own request, as
``application/jwt``. Any other request is an ``invalid_grant`` 404.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from backchannel.authenticator.receipts import issue_receipt
from backchannel.endpoints.client_certificate import authenticate_request_client
from backchannel.endpoints.forms import read_form
from backchannel.endpoints.request_context import services_of
from backchannel.errors import NO_STORE, InvalidRequest

RECEIPTS_PATH = "/receipts"


async def receipts(request: Request) -> Response:
    services = services_of(request)
    form = await read_form(request, services.settings.max_body_bytes)
    client = await authenticate_request_client(
        request, form, services.settings.issuer + RECEIPTS_PATH
    )
    auth_req_id = form.get("auth_req_id")
    if auth_req_id is None:
        raise InvalidRequest("auth_req_id is required")
    token = await issue_receipt(services, client, auth_req_id)
    return Response(token, media_type="application/jwt", headers=NO_STORE)
