"""Registered clients, cached per replica.

A token poll must cost one database round trip, so client records are kept in
memory. Every change to a client is announced on the ``bc_config`` channel
(``client:<id>``), which drops the entry on every replica at once; a short
time-to-live bounds staleness should a notification ever be missed.
"""

from __future__ import annotations

import time

from backchannel.db.clients import Client, select_client
from backchannel.db.pool import ConnectionPool

CACHE_TTL_SECONDS = 30.0


class ClientRegistry:
    def __init__(self, pool: ConnectionPool, ttl: float = CACHE_TTL_SECONDS) -> None:
        self._pool = pool
        self._ttl = ttl
        self._cache: dict[str, tuple[float, Client]] = {}

    async def get(self, client_id: str) -> Client | None:
        """The client, enabled or not; ``None`` if unknown."""
        now = time.monotonic()
        cached = self._cache.get(client_id)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        client = await select_client(self._pool, client_id)
        if client is None:
            self._cache.pop(client_id, None)
            return None
        self._cache[client_id] = (now, client)
        return client

    def invalidate(self, client_id: str | None = None) -> None:
        if client_id is None:
            self._cache.clear()
        else:
            self._cache.pop(client_id, None)

    def on_config_event(self, payload: str) -> None:
        if payload.startswith("client:"):
            self.invalidate(payload.removeprefix("client:"))
