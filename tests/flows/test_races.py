"""Exactly one winner when decisions and redemptions race on real connections."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import httpx
import pytest

from backchannel.db.auth_requests import redeem_auth_request
from backchannel.db.pool import connect
from backchannel.db.tokens import NewRefreshToken, NewTokenSet, redeem_into_token_set
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


async def test_concurrent_one_statement_redemptions_store_exactly_one_token_set(
    http: httpx.AsyncClient, rp: RegisteredClient, db: asyncpg.Connection, database_url: str
) -> None:
    """Tokens signed before the redemption are stored only by the statement that spent
    the request: one access token, one refresh token, one audit row."""
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    await decide(db, auth_req_id, "approved")
    request = await db.fetchrow("SELECT id, client_id, user_id, decided_at FROM auth_requests")
    issued_at = await db.fetchval("SELECT now()")

    def token_set(i: int) -> NewTokenSet:
        return NewTokenSet(
            jti=f"jti-{i}",
            family_id=uuid.uuid4(),
            client_id=request["client_id"],
            user_id=request["user_id"],
            scope=["openid"],
            ttl=300,
            auth_request_id=request["id"],
            dpop_jkt=None,
            x5t_s256=None,
            refresh=NewRefreshToken(
                token_hash=bytes([i]) * 32,
                scope=["openid"],
                auth_time=request["decided_at"],
                ttl=3600,
                max_age=86400,
            ),
            audit_detail={"grant": "ciba", "jti": f"jti-{i}"},
        )

    conns = await _connections(database_url, 16)
    try:
        outcomes = await asyncio.gather(
            *(redeem_into_token_set(c, token_set(i), issued_at) for i, c in enumerate(conns))
        )
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    assert outcomes.count(True) == 1
    winner = f"jti-{outcomes.index(True)}"
    assert await db.fetchval("SELECT status FROM auth_requests") == "redeemed"
    stored = await db.fetch("SELECT jti, created_at FROM access_tokens")
    assert [(r["jti"], r["created_at"]) for r in stored] == [(winner, issued_at)]
    assert await db.fetchval("SELECT count(*) FROM refresh_tokens") == 1
    issued = await audit_events(db, "token_issued")
    assert [e["detail"]["jti"] for e in issued] == [winner]
