"""Token introspection (RFC 7662) of a client's own tokens."""

from __future__ import annotations

from typing import Any

from backchannel.db.clients import Client
from backchannel.db.tokens import select_refresh_token
from backchannel.db.users import select_user
from backchannel.oauth.access_tokens import find_active_access_token
from backchannel.oauth.secrets import hash_secret
from backchannel.oauth.services import Services
from backchannel.oauth.token_issuance import epoch

INACTIVE: dict[str, Any] = {"active": False}


async def introspect_token(
    services: Services, client: Client, token: str, token_type_hint: str | None
) -> dict[str, Any]:
    """RFC 7662 §2.2 response for ``token`` as seen by ``client`` (its own tokens only).

    ``token_type`` is given for access tokens only: RFC 7662 borrows it from
    RFC 6749 §7.1, which types access tokens, not refresh tokens. A bound access
    token's ``cnf`` says what it is bound to.
    """
    if token_type_hint == "refresh_token":
        order = (_introspect_refresh_token, _introspect_access_token)
    else:
        order = (_introspect_access_token, _introspect_refresh_token)
    for attempt in order:
        body = await attempt(services, client, token)
        if body is not None:
            return body
    return dict(INACTIVE)


async def _introspect_access_token(
    services: Services, client: Client, token: str
) -> dict[str, Any] | None:
    active = await find_active_access_token(services, token, client_id=client.client_id)
    if active is None:
        return None
    user = await select_user(services.pool, active.record.user_id)
    if user is None or user.disabled:
        return None
    claims = active.claims
    record = active.record
    body: dict[str, Any] = {
        "active": True,
        "scope": " ".join(active.record.scope),
        "client_id": active.record.client_id,
        "sub": claims["sub"],
        "aud": claims["aud"],
        "iss": claims["iss"],
        "exp": epoch(active.record.expires_at),
        "iat": epoch(active.record.created_at),
        "jti": active.record.jti,
        "token_type": "DPoP" if record.dpop_jkt is not None else "Bearer",
    }
    # What the token carries of how and what the user approved (RFC 9396 §9.2).
    for name in ("acr", "amr", "authorization_details"):
        if name in claims:
            body[name] = claims[name]
    # What the token is bound to (RFC 9449 §6.2, RFC 8705 §3.2).
    cnf = {}
    if record.dpop_jkt is not None:
        cnf["jkt"] = record.dpop_jkt
    if record.x5t_s256 is not None:
        cnf["x5t#S256"] = record.x5t_s256
    if cnf:
        body["cnf"] = cnf
    return body


async def _introspect_refresh_token(
    services: Services, client: Client, token: str
) -> dict[str, Any] | None:
    found = await select_refresh_token(services.pool, hash_secret(token))
    if (
        found is None
        or found.client_id != client.client_id
        or found.rotated_at is not None
        or found.revoked_at is not None
        or found.expired
        or found.user_disabled
    ):
        return None
    return {
        "active": True,
        "scope": " ".join(found.scope),
        "client_id": found.client_id,
        "sub": found.subject,
        "iss": services.settings.issuer,
        "exp": epoch(found.expires_at),
        "iat": epoch(found.created_at),
    }
