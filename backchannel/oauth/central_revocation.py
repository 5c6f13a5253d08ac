"""Central revocation: everything granted to a user, by a device or to a client, at once.

Each revocation runs in one transaction: it ends the pending and
approved-but-unredeemed requests in scope (``denied``, reason ``revoked``),
revokes the live refresh token families and access tokens, wakes the held
long polls of the ended requests on every replica (``DECISION_CHANNEL``, at
commit), withdraws their prompts (dismiss pushes), and writes one ``revoked``
audit event with ``{scope, actor, counts}`` (docs/audit.md).

Requests are ended before tokens are revoked, so a redemption racing with the
revocation either loses the request or has its tokens committed before the
token statement reads them. Introspection, /userinfo and the refresh grant
read ``revoked_at`` on every call, so the effect is immediate.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from backchannel.db.audit import insert_audit_event
from backchannel.db.central_revocation import (
    RevocationSummary,
    announce_ended,
    end_client_requests,
    end_device_approvals,
    end_user_requests,
    revoke_device_tokens,
)
from backchannel.db.devices import Device
from backchannel.oauth.token_revocation import revoke_for_client, revoke_for_user

__all__ = ["RevocationSummary", "revoke_client", "revoke_device_grants", "revoke_user"]

REVOKED_EVENT = "revoked"


async def revoke_user(conn: asyncpg.Connection, user_id: int, *, actor: str) -> RevocationSummary:
    """Revoke every token of the user and end their pending and approved requests."""
    async with conn.transaction():
        ended = await end_user_requests(conn, user_id)
        tokens = await revoke_for_user(conn, user_id)
        summary = RevocationSummary.of(tokens, len(ended), await announce_ended(conn, ended))
        await _audit(conn, "user", actor, summary, user_id=user_id)
    return summary


async def revoke_client(
    conn: asyncpg.Connection, client_id: str, *, actor: str
) -> RevocationSummary:
    """Revoke every token issued to the client and end its pending and approved requests.

    Does not disable the client: ``client disable`` and the "not me" suspension
    call this as their cascade.
    """
    async with conn.transaction():
        ended = await end_client_requests(conn, client_id)
        tokens = await revoke_for_client(conn, client_id)
        summary = RevocationSummary.of(tokens, len(ended), await announce_ended(conn, ended))
        await _audit(conn, "client", actor, summary, client_id=client_id)
    return summary


async def revoke_device_grants(
    conn: asyncpg.Connection, device: Device, *, actor: str
) -> RevocationSummary:
    """Revoke the tokens from requests ``device`` approved and end its approvals not yet
    redeemed (denied, reason ``revoked``). Audited as ``revoked``, scope ``device``."""
    async with conn.transaction():
        # Requests first: a redemption racing with this either commits its tokens
        # before the token statement below reads them, or loses the request.
        ended = await end_device_approvals(conn, device.device_id)
        tokens = await revoke_device_tokens(conn, device.device_id)
        summary = RevocationSummary.of(tokens, len(ended), await announce_ended(conn, ended))
        await _audit(
            conn, "device", actor, summary, user_id=device.user_id, device_id=device.device_id
        )
    return summary


async def _audit(
    conn: asyncpg.Connection, scope: str, actor: str, summary: RevocationSummary, **ids: Any
) -> None:
    await insert_audit_event(
        conn,
        REVOKED_EVENT,
        **ids,
        detail={"scope": scope, "actor": actor, "counts": summary.counts()},
    )
