"""A document fetched over HTTP and kept as long as its ``Cache-Control`` allows (RFC 9111).

The client is a private cache: ``max-age`` (less ``Age``) sets the lifetime,
``no-store`` and ``no-cache`` keep nothing (there is no revalidation, so each
use fetches again), and an answer without either is kept ``default_ttl``.
Concurrent readers of a stale document share one fetch. A forced refetch (an
unknown ``kid``) happens at most once per ``refetch_interval`` seconds, so a
stream of tokens naming unknown keys cannot make the client hammer the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Generic, TypeVar

from backchannel.rp.clock import Clock

T = TypeVar("T")


def freshness_lifetime(headers: Mapping[str, str], default: float, maximum: float) -> float:
    """Seconds the answer with ``headers`` may be reused, from 0 to ``maximum``."""
    directives: dict[str, str] = {}
    for item in headers.get("Cache-Control", "").split(","):
        name, _, value = item.strip().partition("=")
        if name:
            directives[name.strip().lower()] = value.strip().strip('"')
    if "no-store" in directives or "no-cache" in directives:
        return 0.0
    max_age = directives.get("max-age", "")
    if not (max_age.isascii() and max_age.isdigit()):
        return min(default, maximum)
    age = headers.get("Age", "0").strip()
    already = int(age) if age.isascii() and age.isdigit() else 0
    return float(max(0, min(int(max_age) - already, int(maximum))))


class CachedResource(Generic[T]):
    """``fetch()`` returns the document and its lifetime in seconds (0: do not keep it)."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[tuple[T, float]]],
        clock: Clock,
        *,
        refetch_interval: float,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._refetch_interval = refetch_interval
        self._value: T | None = None
        self._expires = float("-inf")
        self._fetched = float("-inf")
        self._lock = asyncio.Lock()

    def _fresh(self) -> T | None:
        if self._value is not None and self._clock.monotonic() < self._expires:
            return self._value
        return None

    async def get(self) -> T:
        """The cached document while fresh, else a newly fetched one."""
        value = self._fresh()
        if value is not None:
            return value
        async with self._lock:
            value = self._fresh()
            if value is not None:
                return value
            return await self._refetch()

    async def refresh(self) -> T | None:
        """Fetch again now, unless the last fetch is under ``refetch_interval`` old: then None."""
        async with self._lock:
            if self._clock.monotonic() - self._fetched < self._refetch_interval:
                return None
            return await self._refetch()

    async def _refetch(self) -> T:
        self._fetched = self._clock.monotonic()  # failed attempts count against the interval too
        value, lifetime = await self._fetch()
        now = self._clock.monotonic()
        if lifetime > 0:
            self._value, self._expires = value, now + lifetime
        else:
            self._value, self._expires = None, float("-inf")
        return value
