"""The service's connection pool (asyncpg's, set up for the service) against a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest

from backchannel.db.pool import ConnectionPool, PoolClosed, create_pool
from tests.support.waiting import eventually

BACKEND_PID = "SELECT pg_backend_pid()"


def missing_database(database_url: str) -> str:
    return urlsplit(database_url)._replace(path="/no_such_db").geturl()


async def gone(db: asyncpg.Connection, pid: int) -> bool:
    return not await backend_alive(db, pid)


async def backend_alive(db: asyncpg.Connection, pid: int) -> bool:
    alive: bool = await db.fetchval("SELECT count(*) > 0 FROM pg_stat_activity WHERE pid = $1", pid)
    return alive


def awaiting(task: asyncio.Task[object], qualname: str) -> bool:
    """True while ``task`` is suspended in a coroutine named ``qualname`` (at any depth)."""
    awaited: object = task.get_coro()
    while awaited is not None:
        if getattr(awaited, "__qualname__", None) == qualname:
            return True
        awaited = getattr(awaited, "cr_await", None)
    return False


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[ConnectionPool]:
    pool = await create_pool(database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def test_statement_helpers_run_on_pooled_connections_with_json_codecs(
    pool: ConnectionPool,
) -> None:
    assert await pool.fetchval("SELECT '{\"a\": [1]}'::jsonb") == {"a": [1]}
    row = await pool.fetchrow("SELECT 1 AS one, 'x'::text AS x")
    assert row is not None and (row["one"], row["x"]) == (1, "x")
    assert [r[0] for r in await pool.fetch("SELECT generate_series(1, 3)")] == [1, 2, 3]
    assert await pool.execute("SELECT 1") == "SELECT 1"


async def test_pooled_connections_plan_statements_generically(pool: ConnectionPool) -> None:
    assert await pool.fetchval("SHOW plan_cache_mode") == "force_generic_plan"


async def test_callers_beyond_max_size_wait_for_a_returned_connection(
    pool: ConnectionPool,
) -> None:
    async def hold() -> int:
        async with pool.acquire() as conn:
            pid: int = await conn.fetchval(BACKEND_PID)
            await asyncio.sleep(0.05)
            return pid

    pids = await asyncio.gather(*(hold() for _ in range(8)))
    assert len(set(pids)) <= 2
    assert pool.size <= 2
    assert pool.idle == pool.size


async def test_a_returned_connection_is_reused_without_a_reset_query(
    pool: ConnectionPool, db: asyncpg.Connection
) -> None:
    first = await pool.fetchval(BACKEND_PID)
    assert await pool.fetchval(BACKEND_PID) == first
    # Handing the connection back sent nothing: its last statement is still ours.
    last = await db.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", first)
    assert last == BACKEND_PID


async def test_a_checkout_gives_up_after_the_acquire_timeout(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1, acquire_timeout=0.2)
    try:
        async with pool.acquire():
            with pytest.raises(TimeoutError):
                await pool.fetchval("SELECT 1")
        assert await pool.fetchval("SELECT 1") == 1
    finally:
        await pool.close()


async def test_a_connection_cannot_be_used_after_its_block(pool: ConnectionPool) -> None:
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT 1") == 1
    with pytest.raises(asyncpg.InterfaceError):
        await conn.fetchval("SELECT 1")


async def test_a_connection_returned_inside_a_transaction_is_rolled_back(
    pool: ConnectionPool,
) -> None:
    async with pool.acquire() as conn:
        await conn.execute("BEGIN")
        await conn.execute("CREATE TEMP TABLE left_open (x int)")
    async with pool.acquire() as conn:
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT to_regclass('pg_temp.left_open')") is None


async def test_an_idle_connection_is_closed_after_max_inactive(
    database_url: str, db: asyncpg.Connection
) -> None:
    pool = await create_pool(database_url, min_size=0, max_size=1, max_inactive=0.2)
    try:
        first = await pool.fetchval(BACKEND_PID)

        async def closed() -> bool:
            return pool.size == 0 and not await backend_alive(db, first)

        await eventually(closed)
        assert await pool.fetchval(BACKEND_PID) != first
    finally:
        await pool.close()


async def test_expired_connections_are_replaced(
    pool: ConnectionPool, db: asyncpg.Connection
) -> None:
    """What a credential rotation asks for: every connection is opened anew."""
    async with pool.acquire() as conn:
        in_use = await conn.fetchval(BACKEND_PID)
        await pool.expire_connections()
        assert await conn.fetchval("SELECT 1") == 1  # the block in progress finishes
    replacement = await pool.fetchval(BACKEND_PID)
    assert replacement != in_use
    await eventually(lambda: gone(db, in_use))


async def test_connections_are_replaced_after_max_age(
    database_url: str, db: asyncpg.Connection
) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1, max_age=0.2)
    try:
        first = await pool.fetchval(BACKEND_PID)

        async def replaced() -> bool:  # a checkout once max_age has passed
            return bool(await pool.fetchval(BACKEND_PID) != first)

        await eventually(replaced)
        await eventually(lambda: gone(db, first))
    finally:
        await pool.close()


async def test_a_statement_cut_short_by_cancellation_does_not_outlive_its_block(
    pool: ConnectionPool, db: asyncpg.Connection
) -> None:
    started = asyncio.Event()
    interrupted: list[int] = []

    async def long_statement() -> None:
        async with pool.acquire() as conn:
            interrupted.append(await conn.fetchval(BACKEND_PID))
            started.set()
            await conn.execute("SELECT pg_sleep(30)")

    task = asyncio.create_task(long_statement())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(5):
        assert await pool.fetchval("SELECT 1") == 1
    running = await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%'"
        " AND state = 'active'"
    )
    assert running == 0
    assert pool.size <= 2


async def test_a_cancelled_waiter_does_not_take_a_connection_with_it(
    pool: ConnectionPool,
) -> None:
    async def waiting_for_a_connection() -> bool:
        return any(awaiting(task, "Queue.get") for task in asyncio.all_tasks())

    async with pool.acquire(), pool.acquire():
        assert not await waiting_for_a_connection()
        waiter = asyncio.create_task(pool.fetchval("SELECT 1"))
        await eventually(waiting_for_a_connection)
        waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert pool.idle == pool.size == 2
    assert await asyncio.gather(*(pool.fetchval("SELECT 2") for _ in range(4))) == [2] * 4


async def test_the_pool_recovers_when_the_server_ends_its_connections(
    pool: ConnectionPool, db: asyncpg.Connection
) -> None:
    pids = await asyncio.gather(*(pool.fetchval(BACKEND_PID) for _ in range(2)))
    await db.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", pids)

    async def ended() -> bool:
        return all([await gone(db, pid) for pid in pids])

    await eventually(ended)
    fresh = await pool.fetchval(BACKEND_PID)
    assert fresh not in pids
    assert pool.size <= 2


async def test_a_failed_connection_attempt_frees_its_slot(database_url: str) -> None:
    pool = await create_pool(missing_database(database_url), min_size=0, max_size=1)
    for _ in range(2):
        with pytest.raises(asyncpg.InvalidCatalogNameError):
            await pool.fetchval("SELECT 1")
        assert pool.size == 0
    await pool.close()


async def test_opening_fails_when_the_database_cannot_be_reached(database_url: str) -> None:
    with pytest.raises(asyncpg.InvalidCatalogNameError):
        await create_pool(missing_database(database_url), min_size=2)


async def test_close_waits_for_connections_in_use_then_refuses_checkouts(
    pool: ConnectionPool,
) -> None:
    checked_out = asyncio.Event()
    released = asyncio.Event()

    async def in_use() -> None:
        async with pool.acquire() as conn:
            checked_out.set()
            await asyncio.sleep(0.2)
            assert await conn.fetchval("SELECT 1") == 1
        released.set()

    user = asyncio.create_task(in_use())
    await checked_out.wait()
    await pool.close()
    assert released.is_set()
    await user
    assert pool.size == 0
    with pytest.raises(PoolClosed):
        await pool.fetchval("SELECT 1")


async def test_close_terminates_what_is_still_in_use_after_the_grace(
    pool: ConnectionPool, db: asyncpg.Connection
) -> None:
    async with pool.acquire() as conn:
        pid = await conn.fetchval(BACKEND_PID)
        await pool.close(grace=0.1)
        with pytest.raises(asyncpg.InterfaceError):
            await conn.fetchval("SELECT 1")
    await eventually(lambda: gone(db, pid))


def test_sizes_must_make_sense() -> None:
    with pytest.raises(ValueError):
        ConnectionPool("postgresql://unused", min_size=3, max_size=2)
