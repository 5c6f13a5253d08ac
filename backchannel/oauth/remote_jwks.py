"""A client's signing keys: its registered ``jwks``, or its ``jwks_uri`` fetched and cached.

The fetch is SSRF-guarded (:mod:`backchannel.url_guard`), never follows
a redirect, and reads at most :data:`MAX_JWKS_BYTES`. Fetched sets are cached
per outbound session for :data:`JWKS_TTL` seconds; a JWT naming an unknown
``kid`` triggers one refetch, at most every :data:`REFRESH_MIN_INTERVAL`
seconds per URL, so random kids cannot make us hammer a client's server.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Collection
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from joserfc.jwk import KeySet

from backchannel.db.clients import Client
from backchannel.oauth.jwt_claims import (
    JWTRejected,
    UnknownSigningKey,
    import_key_set,
    read_header,
    verify_jws,
)
from backchannel.oauth.services import Services
from backchannel.untrusted_json import UntrustedJSON, parse_untrusted_json
from backchannel.url_guard import (
    UnsafeURL,
    check_outbound_url,
    pinned_request_options,
    resolve_public_addresses,
)

log = logging.getLogger(__name__)

JWKS_TTL = 300.0
REFRESH_MIN_INTERVAL = 10.0
MAX_JWKS_BYTES = 64 * 1024
MAX_ADDRESSES_TRIED = 3
_ACCEPT = "application/jwk-set+json, application/json;q=0.9"


class KeysUnavailable(JWTRejected):
    """The client's jwks_uri could not be fetched or did not hold a key set."""


class RemoteJwks:
    """Key sets fetched from ``jwks_uri``s, cached with a time-to-live."""

    def __init__(
        self, ttl: float = JWKS_TTL, refresh_interval: float = REFRESH_MIN_INTERVAL
    ) -> None:
        self._ttl = ttl
        self._refresh_interval = refresh_interval
        self._cache: dict[str, tuple[float, KeySet]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(
        self, http: aiohttp.ClientSession, uri: str, *, allow_insecure: bool, refresh: bool = False
    ) -> KeySet:
        """The key set at ``uri``; ``refresh`` asks for a refetch unless one was just made."""
        lock = self._locks.setdefault(uri, asyncio.Lock())
        async with lock:
            cached = self._cache.get(uri)
            if cached is not None:
                age = time.monotonic() - cached[0]
                if age < (self._refresh_interval if refresh else self._ttl):
                    return cached[1]
            keys = import_key_set(await fetch_jwks(http, uri, allow_insecure=allow_insecure))
            self._cache[uri] = (time.monotonic(), keys)
            return keys

    def invalidate(self, uri: str | None = None) -> None:
        if uri is None:
            self._cache.clear()
        else:
            self._cache.pop(uri, None)


# One cache per outbound session, hence per running app; it goes with the session.
_caches: weakref.WeakKeyDictionary[aiohttp.ClientSession, RemoteJwks] = weakref.WeakKeyDictionary()


def remote_jwks(services: Services) -> RemoteJwks:
    """The jwks_uri cache of this app."""
    cache = _caches.get(services.http)
    if cache is None:
        cache = _caches[services.http] = RemoteJwks()
    return cache


async def fetch_jwks(
    http: aiohttp.ClientSession, uri: str, *, allow_insecure: bool
) -> dict[str, Any]:
    """GET a JWKS document from an outside URL; :class:`KeysUnavailable` on any failure."""
    try:
        check_outbound_url(uri, allow_insecure=allow_insecure)
        if allow_insecure:
            attempts: list[dict[str, Any]] = [{"url": uri}]
        else:
            host = urlsplit(uri).hostname or ""
            addresses = await resolve_public_addresses(host, allow_insecure=False)
            attempts = [pinned_request_options(uri, a) for a in addresses[:MAX_ADDRESSES_TRIED]]
        body = await _get_first(http, attempts)
    except (UnsafeURL, aiohttp.ClientError, TimeoutError) as exc:
        log.warning("jwks_uri %s refused or unreachable: %s", uri, exc)
        raise KeysUnavailable("the client's jwks_uri could not be fetched") from None
    try:
        document = parse_untrusted_json(body, max_bytes=MAX_JWKS_BYTES)
    except UntrustedJSON:
        document = None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        log.warning("jwks_uri %s did not return a JWK set", uri)
        raise KeysUnavailable("the client's jwks_uri did not return a JWK set")
    return document


async def _get_first(http: aiohttp.ClientSession, attempts: list[dict[str, Any]]) -> bytes:
    """Body of the first attempt that connects; a connection error moves to the next."""
    for i, attempt in enumerate(attempts):
        options = dict(attempt)
        headers = {"Accept": _ACCEPT, **options.pop("headers", {})}
        try:
            async with http.get(**options, headers=headers, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise aiohttp.ClientError(f"HTTP {resp.status}")
                if (resp.content_length or 0) > MAX_JWKS_BYTES:
                    raise aiohttp.ClientError("response too large")
                body = await resp.content.read(MAX_JWKS_BYTES + 1)
                if len(body) > MAX_JWKS_BYTES:
                    raise aiohttp.ClientError("response too large")
                return body
        except aiohttp.ClientConnectionError:
            if i == len(attempts) - 1:
                raise
    raise aiohttp.ClientError("no address to connect to")  # pragma: no cover


async def client_key_set(services: Services, client: Client, *, refresh: bool = False) -> KeySet:
    """The client's registered ``jwks``, else the set at its ``jwks_uri``."""
    if client.jwks:
        return import_key_set(client.jwks)
    if client.jwks_uri:
        return await remote_jwks(services).get(
            services.http,
            client.jwks_uri,
            allow_insecure=services.settings.allow_insecure_urls,
            refresh=refresh,
        )
    raise JWTRejected("the client has no registered keys")


async def verify_client_jwt(
    services: Services, client: Client, token: str, algorithms: Collection[str]
) -> dict[str, Any]:
    """Verify a JWS signed by ``client``; its claims. Refetches jwks_uri once on an unknown kid."""
    alg = read_header(token)["alg"]
    if alg not in algorithms:
        raise JWTRejected(f"signing algorithm {alg} is not allowed")
    keys = await client_key_set(services, client)
    try:
        return verify_jws(token, keys, algorithms)
    except UnknownSigningKey:
        if client.jwks or not client.jwks_uri:
            raise
    keys = await client_key_set(services, client, refresh=True)
    return verify_jws(token, keys, algorithms)
