"""Statements behind central revocation (oauth/central_revocation.py).

A request is *ended* by revocation when it is pending or approved but not yet
redeemed: it becomes ``denied`` with ``denial_reason`` ``revoked``, so its
next (or held) poll answers ``access_denied``. Each ending is one conditional
``UPDATE … RETURNING``: against a concurrent approval or redemption exactly
one wins, and the caller revokes tokens after ending requests, so a token
issued by a redemption that won is committed before the revocation reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from backchannel.db.client_notifications import queue_notification
from backchannel.db.listener import DECISION_CHANNEL, notify
from backchannel.db.pool import Queryable
from backchannel.db.push_outbox import withdraw_request_prompts
from backchannel.db.tokens import RevokedCount

REVOKED = "revoked"


@dataclass(frozen=True)
class EndedRequest:
    id: int
    id_hash: bytes
    delivery_mode: str


@dataclass(frozen=True)
class RevocationSummary:
    """What one revocation did."""

    refresh_tokens: int
    access_tokens: int
    requests: int  # pending or approved requests ended (denied, reason revoked)
    dismisses: int  # dismiss pushes queued for the ended requests' prompts

    @classmethod
    def of(cls, tokens: RevokedCount, requests: int, dismisses: int) -> RevocationSummary:
        return cls(tokens.refresh_tokens, tokens.access_tokens, requests, dismisses)

    def counts(self) -> dict[str, int]:
        return {
            "refresh_tokens": self.refresh_tokens,
            "access_tokens": self.access_tokens,
            "requests": self.requests,
            "dismisses": self.dismisses,
        }


_END = """UPDATE auth_requests
             SET status = 'denied', denial_reason = 'revoked', decided_at = now()
           WHERE {where} AND status IN ('pending', 'approved') AND expires_at > now()
       RETURNING id, id_hash, delivery_mode"""


async def _end(conn: asyncpg.Connection, where: str, value: object) -> list[EndedRequest]:
    rows = await conn.fetch(_END.format(where=where), value)
    return [EndedRequest(r["id"], bytes(r["id_hash"]), r["delivery_mode"]) for r in rows]


async def end_user_requests(conn: asyncpg.Connection, user_id: int) -> list[EndedRequest]:
    """End the user's pending and approved-but-unredeemed requests."""
    return await _end(conn, "user_id = $1", user_id)


async def end_client_requests(conn: asyncpg.Connection, client_id: str) -> list[EndedRequest]:
    """End the client's pending and approved-but-unredeemed requests."""
    return await _end(conn, "client_id = $1", client_id)


async def end_device_approvals(conn: asyncpg.Connection, device_id: str) -> list[EndedRequest]:
    """End the requests this device approved that are not redeemed yet."""
    return await _end(conn, "decided_by_device = $1", device_id)


async def announce_ended(conn: asyncpg.Connection, ended: list[EndedRequest]) -> int:
    """Wake held polls of ``ended`` (at commit), queue the notifications of ping and push
    clients, and withdraw their prompts; the dismisses."""
    dismisses = 0
    for request in ended:
        await notify(conn, DECISION_CHANNEL, request.id_hash.hex())
        if request.delivery_mode != "poll":
            await queue_notification(conn, request.id, "denied", denial_reason="revoked")
        dismisses += (await withdraw_request_prompts(conn, request.id)).dismisses
    return dismisses


async def revoke_device_tokens(conn: asyncpg.Connection, device_id: str) -> RevokedCount:
    """Revoke the unexpired tokens descending from approvals by ``device_id``.

    A token is traced to its request by ``auth_request_id`` (access tokens of
    clients without refresh) or by its refresh token family.
    """
    row = await conn.fetchrow(
        """WITH origin AS (
               SELECT id FROM auth_requests WHERE decided_by_device = $1
           ), families AS (
               SELECT DISTINCT family_id FROM refresh_tokens
                WHERE auth_request_id IN (SELECT id FROM origin)
           ), r AS (
               UPDATE refresh_tokens SET revoked_at = now()
                WHERE family_id IN (SELECT family_id FROM families)
                  AND revoked_at IS NULL AND expires_at > now()
            RETURNING 1
           ), a AS (
               UPDATE access_tokens SET revoked_at = now()
                WHERE (auth_request_id IN (SELECT id FROM origin)
                       OR family_id IN (SELECT family_id FROM families))
                  AND revoked_at IS NULL AND expires_at > now()
            RETURNING 1
           )
           SELECT (SELECT count(*) FROM r) AS refresh, (SELECT count(*) FROM a) AS access""",
        device_id,
    )
    assert row is not None
    return RevokedCount(row["refresh"], row["access"])


async def revoke_request_tokens(conn: Queryable, auth_request_id: int) -> RevokedCount:
    """Revoke the unexpired tokens issued for one request (its access tokens and its
    refresh token family): tokens minted for a push that never reached the client."""
    row = await conn.fetchrow(
        """WITH families AS (
               SELECT DISTINCT family_id FROM refresh_tokens WHERE auth_request_id = $1
           ), r AS (
               UPDATE refresh_tokens SET revoked_at = now()
                WHERE family_id IN (SELECT family_id FROM families)
                  AND revoked_at IS NULL AND expires_at > now()
            RETURNING 1
           ), a AS (
               UPDATE access_tokens SET revoked_at = now()
                WHERE (auth_request_id = $1 OR family_id IN (SELECT family_id FROM families))
                  AND revoked_at IS NULL AND expires_at > now()
            RETURNING 1
           )
           SELECT (SELECT count(*) FROM r) AS refresh, (SELECT count(*) FROM a) AS access""",
        auth_request_id,
    )
    assert row is not None
    return RevokedCount(row["refresh"], row["access"])
