"""PostgreSQL connections: the service's connection pool and single connections.

:class:`ConnectionPool` hands out plain ``asyncpg.Connection`` objects. The
service's statements leave no session state behind (advisory locks are
transaction-scoped, nothing runs ``SET``, LISTEN has a connection of its own),
so a connection needs no reset between checkouts: a checkout is a list pop
and a return a list append, or a hand-over to the longest waiting caller.
asyncpg's own pool costs about as much per checkout as the client side of the
statement a token poll runs (a reset query or task per release, a proxy
object, an inactivity timer), which is why the service does not use it.

A connection is closed instead of reused when it comes back closed, still in
a transaction, or from a block left by cancellation (a statement may have
been interrupted mid-flight), and retired once it is ``max_age`` seconds old
(so no backend keeps its cached plans, or a failed-over address, forever). A
free slot then lets the next caller connect anew, so the pool heals after a
database restart without a maintenance task.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from types import TracebackType
from typing import Any

import asyncpg
from asyncpg import Record

Connection = asyncpg.Connection

# Statements are prepared once per connection; their plans do not depend on parameter
# values, so planning every execution (custom plans) is wasted work.
SERVER_SETTINGS = {"plan_cache_mode": "force_generic_plan"}
COMMAND_TIMEOUT = 30.0  # seconds; long polls hold no connection and statements are short
CLOSE_TIMEOUT = 10.0
MAX_AGE = 3600.0  # seconds a connection serves before it is retired


class PoolClosed(asyncpg.InterfaceError):
    """The pool was closed: no more checkouts."""


async def _init_connection(conn: Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


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
    """At most ``max_size`` connections to ``dsn``; ``min_size`` opened up front."""

    def __init__(
        self, dsn: str, *, min_size: int = 2, max_size: int = 10, max_age: float = MAX_AGE
    ) -> None:
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValueError("need 0 <= min_size <= max_size and max_size >= 1")
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._max_age = max_age
        self._opened: dict[Connection, float] = {}  # monotonic time each was opened
        self._closing: set[asyncio.Task[None]] = set()
        self._idle: list[Connection] = []  # the most recently used last
        self._waiters: collections.deque[asyncio.Future[Connection | None]] = collections.deque()
        self._in_use: set[Connection] = set()
        self._size = 0  # idle + in use + being opened
        self._closed = False
        self._drained = asyncio.Event()

    async def open(self) -> ConnectionPool:
        self._size += self._min_size
        opened = await asyncio.gather(
            *(self._connect() for _ in range(self._min_size)), return_exceptions=True
        )
        failures = [c for c in opened if isinstance(c, BaseException)]
        for conn in opened:
            if isinstance(conn, Connection):
                self._idle.append(conn)
        self._size -= len(failures)
        if failures:
            await self.close()
            raise failures[0]
        return self

    async def _connect(self) -> Connection:
        conn = await connect(
            self._dsn, server_settings=SERVER_SETTINGS, command_timeout=COMMAND_TIMEOUT
        )
        self._opened[conn] = time.monotonic()
        return conn

    # -- checkout and return

    def acquire(self) -> Checkout:
        """``async with pool.acquire() as conn:`` a connection for the block."""
        return Checkout(self)

    async def _checkout(self) -> Connection:
        while True:
            if self._closed:
                raise PoolClosed("the connection pool is closed")
            idle = self._idle
            while idle:
                conn = idle.pop()
                if not conn.is_closed():
                    self._in_use.add(conn)
                    return conn
                self._size -= 1
                self._opened.pop(conn, None)
            if self._size < self._max_size:
                self._size += 1
                try:
                    conn = await self._connect()
                except BaseException:
                    self._size -= 1
                    self._offer(None)
                    raise
                if self._closed:
                    self._discard(conn, graceful=True)
                    continue
                self._in_use.add(conn)
                return conn
            waiter: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                handed = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    # Handed a connection (or a free slot) and cancelled before taking it:
                    # pass it on.
                    unclaimed = waiter.result()
                    if unclaimed is None:
                        self._offer(None)
                    else:
                        self._give_back(unclaimed, reusable=True)
                else:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
                raise
            if handed is not None:
                return handed  # already counted in use by _give_back
            # None: a slot was freed; loop to take an idle connection or open one

    def _offer(self, conn: Connection | None) -> bool:
        """Hand ``conn`` (or a free slot, ``None``) to the longest waiting caller."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    def _give_back(self, conn: Connection, *, reusable: bool) -> None:
        self._in_use.discard(conn)
        if not reusable or conn.is_closed() or conn.is_in_transaction():
            self._discard(conn, graceful=False)
        elif self._closed or time.monotonic() - self._opened[conn] > self._max_age:
            self._discard(conn, graceful=True)
        elif self._offer(conn):
            self._in_use.add(conn)
        else:
            self._idle.append(conn)

    def _discard(self, conn: Connection, *, graceful: bool) -> None:
        """Close ``conn`` (politely, or at once when its state is unknown) and free its slot."""
        self._size -= 1
        self._opened.pop(conn, None)
        if not conn.is_closed():
            if graceful:
                task = asyncio.get_running_loop().create_task(conn.close(timeout=CLOSE_TIMEOUT))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
            else:
                conn.terminate()
        if not self._closed:
            self._offer(None)
        elif not self._in_use:
            self._drained.set()

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
        return self._size

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def close(self, grace: float = CLOSE_TIMEOUT) -> None:
        """Refuse new checkouts, close idle connections, then the ones in use as they
        come back; after ``grace`` seconds the rest are terminated."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(PoolClosed("the connection pool is closed"))
        idle, self._idle = self._idle, []
        for conn in idle:
            self._discard(conn, graceful=True)
        if self._in_use:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), grace)
            for conn in list(self._in_use):
                conn.terminate()
        if self._closing:
            await asyncio.wait(list(self._closing), timeout=grace)


class Checkout:
    """A connection checked out of a :class:`ConnectionPool` for one ``async with`` block."""

    __slots__ = ("_conn", "_pool")

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._conn: Connection | None = None

    async def __aenter__(self) -> Connection:
        self._conn = await self._pool._checkout()
        return self._conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # An exception other than Exception (cancellation) may have cut a statement short.
            reusable = exc is None or isinstance(exc, Exception)
            self._pool._give_back(conn, reusable=reusable)


async def create_pool(
    dsn: str, *, min_size: int = 2, max_size: int = 10, max_age: float = MAX_AGE
) -> ConnectionPool:
    return await ConnectionPool(dsn, min_size=min_size, max_size=max_size, max_age=max_age).open()


# What statement helpers accept: a connection (inside a transaction, say) or the pool.
Queryable = Connection | ConnectionPool
