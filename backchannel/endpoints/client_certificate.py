"""The TLS client certificate a request came with (RFC 8705), wherever TLS ended.

Two sources, in this order:

- a TLS-terminating proxy among ``BACKCHANNEL_TRUSTED_PROXIES`` (the request's
  direct peer address) forwards it in ``BACKCHANNEL_CLIENT_CERT_HEADER``
  (default ``X-Client-Cert``) as URL-encoded PEM, as nginx's
  ``$ssl_client_escaped_cert``; from such a peer only the header counts;
- otherwise, the ASGI TLS extension (``scope["extensions"]["tls"]
  ["client_cert_chain"]``): set by a server that supports it, or by
  ``backchannel serve`` when hypercorn terminates TLS itself
  (``cli/server.py``).

The header from any other peer is forged or misrouted: it is ignored, logged,
and audited (``client_certificate_header_ignored``, at most once a minute per
peer address and replica, with the number ignored since).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Mapping
from functools import lru_cache
from urllib.parse import unquote

from starlette.requests import Request

from backchannel.db.audit import insert_audit_event
from backchannel.db.clients import Client
from backchannel.endpoints.request_context import services_of
from backchannel.errors import InvalidRequest
from backchannel.oauth.client_auth import authenticate_client
from backchannel.oauth.client_certificates import CertificateRejected, ClientCertificate

log = logging.getLogger(__name__)

AUDIT_EVERY = 60.0  # seconds between audit events for one peer's forged headers
_STATE = "client_certificate"
_MISSING = object()
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=16)
def _networks(cidrs: tuple[str, ...]) -> tuple[IpNetwork, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def is_trusted_proxy(peer: str | None, cidrs: tuple[str, ...]) -> bool:
    if peer is None or not cidrs:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _networks(cidrs))


async def presented_certificate(request: Request) -> ClientCertificate | None:
    """The client's certificate for this request, None without one (read once per request)."""
    cached = getattr(request.state, _STATE, _MISSING)
    if cached is not _MISSING:
        assert cached is None or isinstance(cached, ClientCertificate)
        return cached
    certificate = await _find(request)
    setattr(request.state, _STATE, certificate)
    return certificate


async def _find(request: Request) -> ClientCertificate | None:
    settings = services_of(request).settings
    peer = request.client.host if request.client is not None else None
    headers = request.headers.getlist(settings.client_cert_header)
    if is_trusted_proxy(peer, settings.trusted_proxies):
        if not headers:
            return None
        if len(headers) > 1:
            raise InvalidRequest("more than one client certificate header")
        try:
            return ClientCertificate.from_pem(unquote(headers[0]))
        except CertificateRejected as exc:
            raise InvalidRequest(str(exc)) from None
    if headers:
        await _audit_ignored_header(request, peer)
    tls = request.scope.get("extensions", {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or ()
    if not chain:
        return None
    try:
        return ClientCertificate.from_pem(chain[0])
    except CertificateRejected as exc:
        raise InvalidRequest(str(exc)) from None


async def _audit_ignored_header(request: Request, peer: str | None) -> None:
    services = services_of(request)
    name = services.settings.client_cert_header
    log.warning(
        "ignored %s from %s, which is not a trusted proxy (BACKCHANNEL_TRUSTED_PROXIES)",
        name,
        peer,
    )
    seen = services.ignored_certificate_headers
    key = peer or "unknown"
    now = time.monotonic()
    last, count = seen.get(key, (float("-inf"), 0))
    if now - last < AUDIT_EVERY:
        seen[key] = (last, count + 1)
        return
    seen[key] = (now, 0)
    if len(seen) > 10000:  # bounded: forget the oldest half
        for stale in sorted(seen, key=lambda k: seen[k][0])[:5000]:
            del seen[stale]
    await insert_audit_event(
        services.pool,
        "client_certificate_header_ignored",
        detail={
            "peer": peer,
            "header": name,
            "path": request.url.path,
            "ignored_since_last_event": count,
        },
    )


async def authenticate_request_client(
    request: Request, form: Mapping[str, str], endpoint_url: str
) -> Client:
    """The authenticated client of a request to ``endpoint_url`` (any of the five
    methods, the TLS certificate included)."""
    return await authenticate_client(
        services_of(request),
        form,
        request.headers.get("authorization"),
        endpoint_url,
        await presented_certificate(request),
    )
