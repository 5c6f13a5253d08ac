"""The asyncpg connection pool and the type codecs every connection gets."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

Connection = asyncpg.Connection
Pool = asyncpg.Pool


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without the default reset query (RESET ALL, UNLISTEN *, unlock all).

    asyncpg still rolls back an open transaction on release. Pooled connections
    never carry session state here: advisory locks taken on them are
    transaction-scoped, nothing runs SET, and LISTEN has its own connection.
    Skipping the reset saves one round trip per checkout, which is half the
    cost of a token poll.
    """


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        # Statements are prepared once per connection; their plans do not depend on
        # parameter values, so planning every execution (custom plans) is wasted work.
        server_settings={"plan_cache_mode": "force_generic_plan"},
        # Long polls hold no connection; statements are short.
        command_timeout=30,
    )
    assert pool is not None
    return pool


async def connect(dsn: str) -> asyncpg.Connection:
    """A single connection with the same codecs as the pool's (CLI, listener)."""
    conn: Any = await asyncpg.connect(dsn)
    await _init_connection(conn)
    return conn  # type: ignore[no-any-return]
