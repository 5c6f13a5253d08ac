"""Registered clients, cached per replica.

A token poll must cost one database round trip, so client records are kept in
memory. Every change to a client is announced on the ``bc_config`` channel
(``client:<id>``), which drops the entry on every replica at once; a short
time-to-live bounds staleness should a notification ever be missed.

Requests that miss the cache together (every connection of a busy client when
its entry expires) share one ``SELECT``. A load that was under way when the
entry was dropped answers its own callers but is not cached.
"""

from __future__ import annotations

import asyncio
import time

from backchannel.db.clients import Client, select_client
from backchannel.db.pool import ConnectionPool

CACHE_TTL_SECONDS = 30.0


class ClientRegistry:
    def __init__(self, pool: ConnectionPool, ttl: float = CACHE_TTL_SECONDS) -> None:
        self._pool = pool
        self._ttl = ttl
        self._cache: dict[str, tuple[float, Client]] = {}
        self._loading: dict[str, asyncio.Future[Client | None]] = {}
        self._epoch = 0  # bumped by every invalidation

    async def get(self, client_id: str) -> Client | None:
        """The client, enabled or not; ``None`` if unknown."""
        cached = self._cache.get(client_id)
        if cached is not None and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        loading = self._loading.get(client_id)
        if loading is None:
            loading = self._loading[client_id] = asyncio.ensure_future(self._load(client_id))
            loading.add_done_callback(lambda done: self._loaded(client_id, done))
        # One caller going away does not cancel the load the others wait for.
        return await asyncio.shield(loading)

    async def _load(self, client_id: str) -> Client | None:
        epoch = self._epoch
        started = time.monotonic()
        client = await select_client(self._pool, client_id)
        if epoch == self._epoch:
            if client is None:
                self._cache.pop(client_id, None)
            else:
                self._cache[client_id] = (started, client)
        return client

    def _loaded(self, client_id: str, done: asyncio.Future[Client | None]) -> None:
        if self._loading.get(client_id) is done:
            del self._loading[client_id]
        if not done.cancelled():
            done.exception()  # retrieved here: every caller may have gone away

    def invalidate(self, client_id: str | None = None) -> None:
        self._epoch += 1
        if client_id is None:
            self._cache.clear()
            self._loading.clear()
        else:
            self._cache.pop(client_id, None)
            self._loading.pop(client_id, None)

    def on_config_event(self, payload: str) -> None:
        if payload.startswith("client:"):
            self.invalidate(payload.removeprefix("client:"))
