"""The provider as the client knows it: its discovery document and its keys, fetched over
the client's HTTP session and cached as their ``Cache-Control`` allows (OIDC Discovery §4,
OIDC Core §10.1.1)."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from backchannel.rp import transport
from backchannel.rp.clock import Clock
from backchannel.rp.discovery import ProviderMetadata, discovery_url, parse_provider_metadata
from backchannel.rp.errors import ProtocolError
from backchannel.rp.http_cache import CachedResource, freshness_lifetime
from backchannel.rp.jwks import ProviderKeys, PublishedKey, parse_jwks


class Provider:
    def __init__(
        self,
        issuer: str,
        http: Callable[[], aiohttp.ClientSession],
        clock: Clock,
        *,
        timeout: float,
        cache_ttl: float,
        max_cache_ttl: float,
        refetch_interval: float,
    ) -> None:
        self.issuer = issuer
        self._http = http
        self._timeout = timeout
        self._cache_ttl, self._max_cache_ttl = cache_ttl, max_cache_ttl
        self._metadata = CachedResource(
            self._fetch_metadata, clock, refetch_interval=refetch_interval
        )
        self.keys = ProviderKeys(
            CachedResource(self._fetch_keys, clock, refetch_interval=refetch_interval)
        )

    async def metadata(self) -> ProviderMetadata:
        return await self._metadata.get()

    async def _get(self, url: str) -> transport.Answer:
        answer = await transport.exchange(self._http(), "GET", url, within=self._timeout)
        if answer.status != 200:
            raise ProtocolError(f"GET {url} answered HTTP {answer.status}", status=answer.status)
        return answer

    def _lifetime(self, answer: transport.Answer) -> float:
        return freshness_lifetime(answer.headers, self._cache_ttl, self._max_cache_ttl)

    async def _fetch_metadata(self) -> tuple[ProviderMetadata, float]:
        answer = await self._get(discovery_url(self.issuer))
        metadata = parse_provider_metadata(answer.json_object(), self.issuer)
        return metadata, self._lifetime(answer)

    async def _fetch_keys(self) -> tuple[tuple[PublishedKey, ...], float]:
        answer = await self._get((await self.metadata()).jwks_uri)
        return parse_jwks(answer.json_object()), self._lifetime(answer)
