"""GET /metrics: the app's Prometheus metrics in the text exposition format.

Who may read them (docs/operations.md, "Monitoring"): with
``BACKCHANNEL_METRICS_TOKEN`` set, only a caller sending
``Authorization: Bearer <token>``; without it, only loopback callers.
"""

from __future__ import annotations

import hmac
import ipaddress

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from backchannel.endpoints.request_context import services_of
from backchannel.errors import AccessDenied, InvalidToken

METRICS_PATH = "/metrics"
BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="metrics"'}


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback addresses."""
    if host is None:
        return False
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def bearer_matches(authorization: str | None, token: str) -> bool:
    """Constant-time check of an ``Authorization: Bearer`` header against ``token``."""
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8"), token.encode("utf-8"))


async def metrics(request: Request) -> Response:
    services = services_of(request)
    token = services.settings.metrics_token
    if token is not None:
        if not bearer_matches(request.headers.get("authorization"), token):
            raise InvalidToken("a valid metrics bearer token is required", headers=BEARER_CHALLENGE)
    elif not is_loopback(request.client.host if request.client is not None else None):
        raise AccessDenied("metrics are only served to this host")
    return Response(
        services.metrics.exposition(),
        media_type=CONTENT_TYPE_LATEST,
        headers={"Cache-Control": "no-store"},
    )
