"""Driving the CIBA flow in tests: start a request, decide it, move its clock."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx

from backchannel.db.auth_requests import Decision
from backchannel.oauth.decision_recording import record_decision
from backchannel.oauth.long_poll import DecisionWaiters
from backchannel.oauth.secrets import hash_secret

CIBA_GRANT = "urn:openid:params:grant-type:ciba"


async def start_request(
    http: httpx.AsyncClient, auth: dict[str, str], **params: Any
) -> httpx.Response:
    form = {"scope": "openid", "login_hint": "alice@example.com", **params}
    form = {k: v for k, v in form.items() if v is not None}
    return await http.post("/bc-authorize", data=form, headers=auth)


async def start_auth_req_id(http: httpx.AsyncClient, auth: dict[str, str], **params: Any) -> str:
    response = await start_request(http, auth, **params)
    assert response.status_code == 200, response.text
    auth_req_id: str = response.json()["auth_req_id"]
    return auth_req_id


async def poll(
    http: httpx.AsyncClient,
    auth: dict[str, str],
    auth_req_id: str,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await http.post(
        "/token",
        data={"grant_type": CIBA_GRANT, "auth_req_id": auth_req_id},
        headers={**auth, **(headers or {})},
    )


async def decide(
    conn: asyncpg.Connection, auth_req_id: str, decision: str = "approved", **kwargs: Any
) -> Decision:
    return await record_decision(conn, hash_secret(auth_req_id), decision, **kwargs)  # type: ignore[arg-type]


async def rewind(conn: asyncpg.Connection, auth_req_id: str, seconds: float) -> None:
    """Move a request's timestamps into the past, as if ``seconds`` had gone by."""
    await conn.execute(
        """UPDATE auth_requests SET
               created_at = created_at - make_interval(secs => $2),
               expires_at = expires_at - make_interval(secs => $2),
               last_polled_at = last_polled_at - make_interval(secs => $2),
               locked_until = locked_until - make_interval(secs => $2)
         WHERE id_hash = $1""",
        hash_secret(auth_req_id),
        seconds,
    )


async def audit_events(conn: asyncpg.Connection, event: str | None = None) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT * FROM audit_events WHERE $1::text IS NULL OR event = $1 ORDER BY id", event
    )
    return [dict(r) for r in rows]


async def poll_is_held(db: asyncpg.Connection, waiters: DecisionWaiters, polls: int = 1) -> bool:
    """True once the (only) request has been polled ``polls`` times and the server holds
    a long poll. A held poll registers its waiter before its poll statement runs, so the
    two together mean the poll got past the statement and is waiting for a decision."""
    polled = await db.fetchval("SELECT poll_count FROM auth_requests")
    return bool(polled == polls) and waiters.held >= 1
