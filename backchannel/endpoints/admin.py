"""``POST /admin/enrolments``: a relying party allowed to enrol users obtains a one-time code.

Client authentication as at ``/token``; the client must be registered with
``may_enrol_users``. Form: ``login_hint``. Answer: 201 with the code, its
link, its lifetime and the link as an SVG QR code (docs/device-api.md).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from backchannel.authenticator.enrolment import issue_enrolment_code
from backchannel.endpoints.client_certificate import authenticate_request_client
from backchannel.endpoints.forms import read_form
from backchannel.endpoints.request_context import services_of
from backchannel.errors import NO_STORE, AccessDenied, InvalidRequest
from backchannel.oauth.hint_resolution import resolve_user
from backchannel.responses import JSONResponse

ENROLMENTS_PATH = "/admin/enrolments"


async def create_enrolment(request: Request) -> Response:
    services = services_of(request)
    settings = services.settings
    form = await read_form(request, settings.max_body_bytes)
    client = await authenticate_request_client(request, form, settings.issuer + ENROLMENTS_PATH)
    if not client.may_enrol_users:
        raise AccessDenied("this client may not enrol users")
    login_hint = form.get("login_hint")
    if login_hint is None:
        raise InvalidRequest("login_hint is required")
    user = await resolve_user(services, client, login_hint=login_hint)
    async with services.pool.acquire() as conn:
        code = await issue_enrolment_code(
            conn,
            user.user_id,
            client.client_id,
            settings.enrolment_code_ttl,
            issuer=settings.issuer,
        )
    return JSONResponse(
        {
            "enrolment_code": code.code,
            "enrolment_url": code.url,
            "expires_in": code.expires_in,
            "qr_svg": code.qr_svg(),
        },
        status_code=201,
        headers=NO_STORE,
    )
