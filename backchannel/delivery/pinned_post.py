"""POSTs to URLs that come from outside, connected to the addresses just checked.

The host is resolved and every address checked (:func:`resolve_public_addresses`)
right before connecting, and the request then goes to one of those addresses
with the URL's host name kept for ``Host`` and the TLS name check. A name
cannot be re-pointed between the check and the connection (DNS rebinding).
Redirects are never followed.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import aiohttp

from backchannel.url_guard import pinned_request_options, resolve_public_addresses

# Addresses of one host tried in turn when a connection cannot be made.
MAX_ADDRESSES_TRIED = 3


async def pinned_attempts(url: str, *, allow_insecure: bool) -> list[dict[str, Any]]:
    """Request options for each address to try, pinned to the checked addresses;
    :class:`~backchannel.url_guard.UnsafeURL` if the host resolves anywhere non-public
    (unless ``allow_insecure``)."""
    host = (urlsplit(url).hostname or "").rstrip(".")
    addresses = await resolve_public_addresses(host, allow_insecure=allow_insecure)
    return [pinned_request_options(url, a) for a in addresses[:MAX_ADDRESSES_TRIED]]


async def post_first_reachable(
    http: aiohttp.ClientSession,
    attempts: list[dict[str, Any]],
    headers: dict[str, str],
    body: bytes,
) -> tuple[int, str | None]:
    """POST to the first address that connects; (status, Retry-After).

    The caller bounds the time; the session's own default timeout is lifted
    so that it cannot cut in first.
    """
    for i, attempt in enumerate(attempts):
        options = dict(attempt)
        pinned_headers = options.pop("headers", {})
        try:
            async with http.post(
                **options,
                headers={**headers, **pinned_headers},
                data=body,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=None),
            ) as resp:
                # The answer's body is not needed; reading a little lets the
                # connection go back to the pool.
                await resp.content.read(4096)
                return resp.status, resp.headers.get("Retry-After")
        except aiohttp.ClientConnectorError:
            if i == len(attempts) - 1:
                raise
    raise aiohttp.ClientError("no address to connect to")
