"""The refresh_token grant (RFC 6749 §6) with rotation and reuse detection.

Every use spends the token and issues a new one in the same family (RFC 9700
§4.14.2). Presenting a token that was already spent means two parties hold
it, and nobody can tell which is legitimate: the whole family is revoked.
Two concurrent requests with the same token count as such a replay.

A family obtained with a DPoP proof stays bound to that key (RFC 9449 §5):
each refresh needs a proof signed by it, checked before the token is spent,
so that a thief without the key can neither use nor burn it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backchannel.db.audit import insert_audit_event
from backchannel.db.clients import Client
from backchannel.db.tokens import (
    RefreshToken,
    lock_refresh_family,
    revoke_family,
    rotate_refresh_token,
    select_refresh_token,
)
from backchannel.errors import (
    InvalidDPoPProof,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    UnauthorizedClient,
)
from backchannel.oauth.assurance import acr_claim
from backchannel.oauth.secrets import hash_secret
from backchannel.oauth.sender_constraint import UNBOUND, TokenBinding
from backchannel.oauth.services import Services
from backchannel.oauth.token_issuance import Grant, issue_tokens


def narrowed_scope(granted: tuple[str, ...], requested: str | None) -> list[str]:
    """The scope for the new access token: the grant's, or a subset of it (RFC 6749 §6)."""
    if requested is None:
        return list(granted)
    wanted = list(dict.fromkeys(requested.split()))
    if not wanted:
        raise InvalidScope("scope is empty")
    extra = [s for s in wanted if s not in granted]
    if extra:
        raise InvalidScope("scope may only narrow the original grant")
    if "openid" not in wanted:
        raise InvalidScope("scope must contain openid")
    return wanted


async def refresh_grant(
    services: Services,
    client: Client,
    form: Mapping[str, str],
    binding: TokenBinding = UNBOUND,
) -> dict[str, Any]:
    """Answer ``grant_type=refresh_token`` for an authenticated ``client``."""
    if not client.may_refresh:
        raise UnauthorizedClient("the client may not use the refresh_token grant")
    token = form.get("refresh_token")
    if not token:
        raise InvalidRequest("refresh_token is required")
    token_hash = hash_secret(token)

    replayed: RefreshToken | None = None
    async with services.pool.acquire() as conn, conn.transaction():
        if not await lock_refresh_family(conn, token_hash):
            raise InvalidGrant("the refresh token is invalid, expired or revoked")
        current = await select_refresh_token(conn, token_hash)
        if (
            current is not None
            and current.client_id == client.client_id
            and current.dpop_jkt is not None
        ):
            if binding.dpop_jkt is None:
                raise InvalidDPoPProof("this refresh token is DPoP-bound: send a DPoP proof")
            if binding.dpop_jkt != current.dpop_jkt:
                raise InvalidDPoPProof("this refresh token is bound to another DPoP key")
        spent = await rotate_refresh_token(conn, token_hash, client.client_id)
        if spent is not None:
            scope = narrowed_scope(spent.scope, form.get("scope"))
            grant = Grant(
                client=client,
                user_id=spent.user_id,
                subject=spent.subject,
                scope=tuple(scope),
                auth_time=spent.auth_time,
                auth_request_id=spent.auth_request_id,
                family_id=spent.family_id,
                refresh_scope=tuple(spent.scope),
                # The ID token keeps describing the original approval (OIDC Core §12.2).
                acr=acr_claim(spent.acr, spent.amr),
                amr=spent.amr,
                binding=binding,
                refresh_jkt=spent.dpop_jkt,
            )
            return await issue_tokens(services, conn, grant)
        found = await select_refresh_token(conn, token_hash)
        if (
            found is not None
            and found.client_id == client.client_id
            and found.rotated_at is not None
            and found.revoked_at is None
        ):
            revoked = await revoke_family(conn, found.family_id)
            await insert_audit_event(
                conn,
                "refresh_token_reuse",
                client_id=client.client_id,
                user_id=found.user_id,
                auth_request_id=found.auth_request_id,
                detail={
                    "family_id": str(found.family_id),
                    "refresh_tokens_revoked": revoked.refresh_tokens,
                    "access_tokens_revoked": revoked.access_tokens,
                },
            )
            replayed = found
    # Raised after the commit, so that the family stays revoked.
    if replayed is not None:
        raise InvalidGrant("the refresh token was already used; the grant is revoked")
    raise InvalidGrant("the refresh token is invalid, expired or revoked")
