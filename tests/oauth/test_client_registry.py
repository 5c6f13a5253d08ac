"""The per-replica client cache (oauth/client_registry.py) against a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asyncpg import Record

from backchannel.db.pool import ConnectionPool
from backchannel.oauth.client_registry import ClientRegistry
from tests.conftest import RegisteredClient
from tests.support.waiting import eventually


class CountingPool(ConnectionPool):
    """The service's pool, counting the rows it was asked for; ``gate`` holds them back."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetchrows = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def fetchrow(self, query: str, *args: Any) -> Record | None:
        self.fetchrows += 1
        await self.gate.wait()
        return await super().fetchrow(query, *args)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[CountingPool]:
    pool = await CountingPool(database_url, min_size=1, max_size=4).open()
    yield pool
    await pool.close()


async def test_requests_missing_the_cache_together_share_one_select(
    pool: CountingPool, rp: RegisteredClient
) -> None:
    registry = ClientRegistry(pool)
    pool.gate.clear()
    waiting = [asyncio.ensure_future(registry.get(rp.client.client_id)) for _ in range(20)]
    await eventually(lambda: asyncio.sleep(0, pool.fetchrows == 1))
    pool.gate.set()
    found = await asyncio.gather(*waiting)
    assert {c.client_id for c in found if c is not None} == {rp.client.client_id}
    assert pool.fetchrows == 1
    assert await registry.get(rp.client.client_id) == found[0]  # cached now
    assert pool.fetchrows == 1


async def test_a_load_under_way_when_the_client_changed_is_not_cached(
    pool: CountingPool, rp: RegisteredClient
) -> None:
    registry = ClientRegistry(pool)
    pool.gate.clear()
    first = asyncio.ensure_future(registry.get(rp.client.client_id))
    await eventually(lambda: asyncio.sleep(0, pool.fetchrows == 1))
    registry.on_config_event(f"client:{rp.client.client_id}")
    pool.gate.set()
    assert (await first) is not None
    await registry.get(rp.client.client_id)
    assert pool.fetchrows == 2  # read again, not served from the load that began before


async def test_a_caller_going_away_does_not_cancel_the_load_others_wait_for(
    pool: CountingPool, rp: RegisteredClient
) -> None:
    registry = ClientRegistry(pool)
    pool.gate.clear()
    leaving = asyncio.ensure_future(registry.get(rp.client.client_id))
    staying = asyncio.ensure_future(registry.get(rp.client.client_id))
    await eventually(lambda: asyncio.sleep(0, pool.fetchrows == 1))
    leaving.cancel()
    pool.gate.set()
    client = await staying
    assert client is not None and client.client_id == rp.client.client_id
    assert leaving.cancelled()


async def test_an_unknown_client_is_none_and_not_cached(pool: CountingPool) -> None:
    registry = ClientRegistry(pool)
    assert await registry.get("no-such-client") is None
    assert await registry.get("no-such-client") is None
    assert pool.fetchrows == 2
