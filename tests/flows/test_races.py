"""Exactly one winner when decisions and redemptions race on real connections."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest

from backchannel.db.auth_requests import redeem_auth_request
from backchannel.db.pool import connect
from backchannel.errors import RequestNotPending
from tests.conftest import RegisteredClient
from tests.support.ciba import audit_events, decide, start_auth_req_id

pytestmark = pytest.mark.usefixtures("alice")


async def _connections(database_url: str, n: int) -> list[asyncpg.Connection]:
    return list(await asyncio.gather(*(connect(database_url) for _ in range(n))))


async def test_concurrent_approve_and_deny_record_exactly_one_decision(
    http: httpx.AsyncClient, rp: RegisteredClient, db: asyncpg.Connection, database_url: str
) -> None:
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    conns = await _connections(database_url, 16)
    try:
        outcomes = await asyncio.gather(
            *(
                decide(conn, auth_req_id, "approved" if i % 2 else "denied", device_id=f"d{i}")
                for i, conn in enumerate(conns)
            ),
            return_exceptions=True,
        )
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    losers = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(o, RequestNotPending) for o in losers)
    row = await db.fetchrow("SELECT status, decided_by_device FROM auth_requests")
    assert row["status"] == winners[0].status
    assert len(await audit_events(db, "auth_request_decided")) == 1


async def test_concurrent_redemptions_have_exactly_one_winner(
    http: httpx.AsyncClient, rp: RegisteredClient, db: asyncpg.Connection, database_url: str
) -> None:
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    await decide(db, auth_req_id, "approved")
    request_id = await db.fetchval("SELECT id FROM auth_requests")
    conns = await _connections(database_url, 16)

    async def redeem(conn: asyncpg.Connection) -> object:
        async with conn.transaction():
            return await redeem_auth_request(conn, request_id)

    try:
        outcomes = await asyncio.gather(*(redeem(c) for c in conns))
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    assert sum(o is not None for o in outcomes) == 1
    assert await db.fetchval("SELECT status FROM auth_requests") == "redeemed"
