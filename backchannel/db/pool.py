"""PostgreSQL connections: the service's connection pool and single connections.

:class:`ConnectionPool` is asyncpg's ``Pool``, set up as the service needs:

- every connection gets the JSON codecs and generic plans (``init``,
  ``server_settings``);
- handing a connection back sends nothing to the server. The service's
  statements leave no session state behind (advisory locks are
  transaction-scoped, settings change only for a transaction with
  ``set_config(..., true)``, LISTEN has a connection of its own), so ``reset``
  is a no-op instead of asyncpg's reset query, which would double the round
  trips of a token poll. asyncpg still rolls back a transaction left open and
  waits out a statement cut short by cancellation before reuse;
- a checkout waits at most ``acquire_timeout`` seconds (``TimeoutError``), opening a
  connection included, and a statement at most ``command_timeout`` seconds;
- a connection used after its ``async with`` block raises ``InterfaceError``
  (asyncpg hands out a proxy that is cut off on release);
- a connection idle for ``max_inactive`` seconds is closed, and every
  connection is replaced once ``max_age`` seconds have passed (so no backend
  keeps its cached plans, or a failed-over address, forever);
  :meth:`ConnectionPool.expire_connections` does the same at once, for example
  after the database password was rotated.

A connection the server closed is replaced at the next checkout, so the pool
heals after a database restart without a maintenance task of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from contextlib import AbstractAsyncContextManager
from typing import Any, cast

import asyncpg
from asyncpg import Record

Connection = asyncpg.Connection

# Statements are prepared once per connection; their plans do not depend on parameter
# values, so planning every execution (custom plans) is wasted work.
SERVER_SETTINGS = {"plan_cache_mode": "force_generic_plan"}
COMMAND_TIMEOUT = 30.0  # seconds; long polls hold no connection and statements are short
ACQUIRE_TIMEOUT = 10.0  # seconds a checkout may wait for a free connection
CLOSE_TIMEOUT = 10.0
MAX_AGE = 3600.0  # seconds after which every connection is replaced
MAX_INACTIVE = 300.0  # seconds an unused connection stays open


class PoolClosed(asyncpg.InterfaceError):
    """The pool was closed: no more checkouts."""


async def _init_connection(conn: Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: Connection) -> None:
    """The release ``reset``: nothing to undo (see the module docstring)."""


async def connect(dsn: str, **kwargs: Any) -> Connection:
    """A single connection with the pool's codecs (CLI, listener, tests)."""
    conn: Connection = await asyncpg.connect(dsn, **kwargs)
    try:
        await _init_connection(conn)
    except BaseException:
        conn.terminate()
        raise
    return conn


class ConnectionPool:
    """At most ``max_size`` connections to ``dsn``; ``min_size`` kept open."""

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 2,
        max_size: int = 10,
        max_age: float = MAX_AGE,
        max_inactive: float = MAX_INACTIVE,
        acquire_timeout: float = ACQUIRE_TIMEOUT,
        command_timeout: float = COMMAND_TIMEOUT,
    ) -> None:
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValueError("need 0 <= min_size <= max_size and max_size >= 1")
        self._pool = asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            max_inactive_connection_lifetime=max_inactive,
            init=_init_connection,
            reset=_keep_session,
            server_settings=SERVER_SETTINGS,
            command_timeout=command_timeout,
        )
        self._max_age = max_age
        self._acquire_timeout = acquire_timeout
        self._retirer: asyncio.Task[None] | None = None
        self._closed = False

    async def open(self) -> ConnectionPool:
        await self._pool
        self._retirer = asyncio.get_running_loop().create_task(self._retire_periodically())
        return self

    async def _retire_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._max_age)
            await self.expire_connections()

    async def expire_connections(self) -> None:
        """Replace every connection: idle ones at their next checkout, ones in use when
        they come back (closed politely, not cut off)."""
        await self._pool.expire_connections()

    # -- checkout

    def acquire(self) -> AbstractAsyncContextManager[Connection]:
        """``async with pool.acquire() as conn:`` a connection for the block."""
        if self._closed:
            raise PoolClosed("the connection pool is closed")
        # A proxy that forwards to the connection until the block ends.
        return cast(
            AbstractAsyncContextManager[Connection],
            self._pool.acquire(timeout=self._acquire_timeout),
        )

    # -- one statement on a pooled connection

    async def fetchrow(self, query: str, *args: Any) -> Record | None:
        async with self.acquire() as conn:
            return await conn.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchval(query, *args)

    async def fetch(self, query: str, *args: Any) -> list[Record]:
        async with self.acquire() as conn:
            return await conn.fetch(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        async with self.acquire() as conn:
            return await conn.execute(query, *args)

    # -- state and shutdown

    @property
    def size(self) -> int:
        return self._pool.get_size()

    @property
    def idle(self) -> int:
        return self._pool.get_idle_size()

    async def close(self, grace: float = CLOSE_TIMEOUT) -> None:
        """Refuse new checkouts, wait up to ``grace`` seconds for the connections in use
        to come back and close them all; after that the rest are terminated."""
        self._closed = True
        if self._retirer is not None:
            self._retirer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retirer
        try:
            await asyncio.wait_for(self._pool.close(), grace)
        except TimeoutError:
            self._pool.terminate()


async def create_pool(
    dsn: str, *, min_size: int = 2, max_size: int = 10, max_age: float = MAX_AGE, **options: Any
) -> ConnectionPool:
    return await ConnectionPool(
        dsn, min_size=min_size, max_size=max_size, max_age=max_age, **options
    ).open()


# What statement helpers accept: a connection (inside a transaction, say) or the pool.
Queryable = Connection | ConnectionPool
