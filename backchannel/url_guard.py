"""A guard for URLs that come from outside (jwks_uri, notification and Web Push endpoints).

Two steps: :func:`check_outbound_url` checks the URL's shape when it is
registered or received; :func:`resolve_public_addresses` checks where the host
name points right before connecting, so that a name resolving to a private
address (SSRF, DNS rebinding) is refused. :class:`PublicOnlyResolver` applies
the second step to every connection an ``aiohttp`` session makes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Collection
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

MAX_URL_LENGTH = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# IPv6 prefixes that carry an IPv4 address a gateway would connect to.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class UnsafeURL(ValueError):
    """The URL may not be used for an outbound request; the message says why."""


class Unresolvable(UnsafeURL):
    """The host name does not resolve (now): nothing is known of where it points."""


def is_public_address(address: IPAddress) -> bool:
    """True for a globally routable unicast address (also for the IPv4 one it embeds)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded: ipaddress.IPv4Address | None = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and not is_public_address(embedded):
            return False
        if address.teredo is not None and not is_public_address(address.teredo[1]):
            return False
    return address.is_global and not address.is_multicast


def host_matches(host: str, pattern: str) -> bool:
    """``example.com`` matches itself; ``*.example.com`` matches any name below it."""
    pattern = pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def check_outbound_url(
    url: str, *, allow_insecure: bool, allowed_hosts: Collection[str] | None = None
) -> str:
    """Return ``url`` if its shape is safe to call; raise :class:`UnsafeURL` otherwise.

    https only (http too with ``allow_insecure``), no userinfo or fragment, a
    host from ``allowed_hosts`` when given, and no literal address that is not
    public unless ``allow_insecure``.
    """
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeURL(f"URL is longer than {MAX_URL_LENGTH} characters")
    if not url.isascii() or any(ch.isspace() or not ch.isprintable() for ch in url):
        raise UnsafeURL("URL contains spaces, control or non-ASCII characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeURL(f"malformed URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme != "https" and not (allow_insecure and scheme == "http"):
        raise UnsafeURL("URL must use https")
    if "@" in parts.netloc or parts.username is not None:
        raise UnsafeURL("URL must not contain user information")
    if parts.fragment or url.endswith("#"):
        raise UnsafeURL("URL must not contain a fragment")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UnsafeURL("URL has no host")
    if port == 0:
        raise UnsafeURL("URL has port 0")
    if allowed_hosts is not None and not any(host_matches(host, p) for p in allowed_hosts):
        raise UnsafeURL(f"host {host} is not allowed here")
    literal = _literal_address(host)
    if not allow_insecure:
        if literal is not None and not is_public_address(literal):
            raise UnsafeURL(f"address {literal} is not public")
        if host == "localhost" or host.endswith(".localhost"):
            raise UnsafeURL("localhost is not allowed")
    return url


def _literal_address(host: str) -> IPAddress | None:
    """The address ``host`` spells, if it is an IP literal; odd IPv4 spellings are refused."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        packed = socket.inet_aton(host)
    except OSError:
        return None
    # "127.1", "0x7f000001", "2130706433": resolvers read these as addresses.
    raise UnsafeURL(f"ambiguous address {host} (use dotted-quad {ipaddress.IPv4Address(packed)})")


async def resolve_public_addresses(host: str, *, allow_insecure: bool) -> list[str]:
    """Resolve ``host``; raise :class:`UnsafeURL` unless every address is public.

    An IP literal is its own address: it is checked without a trip to the resolver
    (which runs in a thread).
    """
    host = host.strip("[]")
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None  # a name, or an odd spelling the resolver reads
    if literal is not None and not (
        isinstance(literal, ipaddress.IPv6Address) and literal.scope_id
    ):
        if not allow_insecure and not is_public_address(literal):
            raise UnsafeURL(f"{host} is not public")
        return [str(literal)]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Unresolvable(f"cannot resolve {host}: {exc}") from None
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        text = str(sockaddr[0]).split("%", 1)[0]
        if text not in addresses:
            addresses.append(text)
    if not addresses:
        raise Unresolvable(f"{host} has no addresses")
    if not allow_insecure:
        for text in addresses:
            if not is_public_address(ipaddress.ip_address(text)):
                raise UnsafeURL(f"{host} resolves to {text}, which is not public")
    return addresses


class PublicOnlyResolver(AbstractResolver):
    """An aiohttp resolver that refuses host names resolving to non-public addresses.

    Use it in the ``TCPConnector`` of the outbound session so that the address
    checked is the address connected to.
    """

    def __init__(self, *, allow_insecure: bool, inner: AbstractResolver | None = None) -> None:
        self._allow_insecure = allow_insecure
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not self._allow_insecure:
            for result in results:
                if not is_public_address(ipaddress.ip_address(result["host"])):
                    # aiohttp turns an OSError from the resolver into ClientConnectorDNSError.
                    raise OSError(f"{host} resolves to a non-public address")
        return results

    async def close(self) -> None:
        await self._inner.close()


def pinned_request_options(url: str, address: str) -> dict[str, Any]:
    """``aiohttp`` request arguments that connect to ``address`` yet speak to the URL's host.

    Returns ``url`` (with the host replaced), ``headers`` (Host) and
    ``server_hostname`` (TLS name check), for use after
    :func:`resolve_public_addresses` when the session's resolver is not guarded.
    """
    original = URL(url)
    host_header = urlsplit(url).netloc
    options: dict[str, Any] = {
        "url": original.with_host(address),
        "headers": {"Host": host_header},
    }
    if original.scheme == "https":
        options["server_hostname"] = original.host
    return options
