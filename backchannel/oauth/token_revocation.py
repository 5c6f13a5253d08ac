"""Token revocation (RFC 7009) and bulk revocation for governance.

Revoking a refresh token revokes its whole family, access tokens included
(RFC 7009 §2.1). Revoking an access token revokes that token only. A token
that is unknown, or belongs to another client, is answered with success and
left alone (RFC 7009 §2.2), so the endpoint reveals nothing about it.
"""

from __future__ import annotations

import asyncpg

from backchannel.db.audit import insert_audit_event
from backchannel.db.clients import Client
from backchannel.db.tokens import (
    RevokedCount,
    lock_refresh_family,
    revoke_access_token,
    revoke_client_tokens,
    revoke_family,
    revoke_user_tokens,
    select_refresh_token,
)
from backchannel.oauth.access_tokens import read_access_token
from backchannel.oauth.secrets import hash_secret
from backchannel.oauth.services import Services

TOKEN_REVOKED = "token_revoked"


async def revoke_token(
    services: Services, client: Client, token: str, token_type_hint: str | None
) -> None:
    """Revoke ``token`` if it is ``client``'s; silently do nothing otherwise (RFC 7009 §2.1)."""
    # The hint only orders the search (RFC 7009 §2.1); an unknown hint is ignored.
    if token_type_hint == "access_token":
        order = (_revoke_access_token, _revoke_refresh_token)
    else:
        order = (_revoke_refresh_token, _revoke_access_token)
    for attempt in order:
        if await attempt(services, client, token):
            return


async def _revoke_refresh_token(services: Services, client: Client, token: str) -> bool:
    """True if ``token`` is a refresh token of ``client`` (revoked now or before)."""
    token_hash = hash_secret(token)
    async with services.pool.acquire() as conn, conn.transaction():
        if not await lock_refresh_family(conn, token_hash):
            return False
        found = await select_refresh_token(conn, token_hash)
        if found is None or found.client_id != client.client_id:
            return False
        revoked = await revoke_family(conn, found.family_id)
        if revoked.total:
            await insert_audit_event(
                conn,
                TOKEN_REVOKED,
                client_id=client.client_id,
                user_id=found.user_id,
                auth_request_id=found.auth_request_id,
                detail={
                    "token_type": "refresh_token",
                    "family_id": str(found.family_id),
                    "refresh_tokens": revoked.refresh_tokens,
                    "access_tokens": revoked.access_tokens,
                },
            )
    return True


async def _revoke_access_token(services: Services, client: Client, token: str) -> bool:
    """True if ``token`` is an access token this server issued to ``client``."""
    claims = read_access_token(services.keys, token, issuer=services.settings.issuer)
    if claims is None or claims["client_id"] != client.client_id:
        return False
    async with services.pool.acquire() as conn, conn.transaction():
        user_id = await revoke_access_token(conn, claims["jti"], client.client_id)
        if user_id is not None:
            await insert_audit_event(
                conn,
                TOKEN_REVOKED,
                client_id=client.client_id,
                user_id=user_id,
                detail={"token_type": "access_token", "jti": claims["jti"]},
            )
    return True


async def revoke_for_user(conn: asyncpg.Connection, user_id: int) -> RevokedCount:
    """Revoke every live refresh and access token of a user (account disabled, lost device)."""
    async with conn.transaction():
        revoked = await revoke_user_tokens(conn, user_id)
        if revoked.total:
            await insert_audit_event(
                conn,
                TOKEN_REVOKED,
                user_id=user_id,
                detail={
                    "scope": "user",
                    "refresh_tokens": revoked.refresh_tokens,
                    "access_tokens": revoked.access_tokens,
                },
            )
    return revoked


async def revoke_for_client(conn: asyncpg.Connection, client_id: str) -> RevokedCount:
    """Revoke every live refresh and access token issued to a client."""
    async with conn.transaction():
        revoked = await revoke_client_tokens(conn, client_id)
        if revoked.total:
            await insert_audit_event(
                conn,
                TOKEN_REVOKED,
                client_id=client_id,
                detail={
                    "scope": "client",
                    "refresh_tokens": revoked.refresh_tokens,
                    "access_tokens": revoked.access_tokens,
                },
            )
    return revoked
