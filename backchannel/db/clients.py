"""The ``clients`` table: registered relying parties."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from backchannel.db.pool import Queryable

CIBA_GRANT = "urn:openid:params:grant-type:ciba"


@dataclass(frozen=True)
class Client:
    client_id: str
    name: str
    secret_hash: bytes | None
    token_endpoint_auth_method: str
    jwks: dict[str, Any] | None
    jwks_uri: str | None
    grant_types: tuple[str, ...]
    scopes: tuple[str, ...]
    backchannel_token_delivery_mode: str
    backchannel_client_notification_endpoint: str | None
    backchannel_authentication_request_signing_alg: str | None
    require_signed_request: bool
    backchannel_user_code_parameter: bool
    id_token_signed_response_alg: str
    access_token_ttl: int | None
    refresh_token_ttl: int | None
    max_requested_expiry: int | None
    login_hint_token_issuers: tuple[dict[str, Any], ...] = field(default=())
    created_at: datetime | None = None
    disabled_at: datetime | None = None
    # May obtain enrolment codes for users at POST /admin/enrolments.
    may_enrol_users: bool = False
    # Approval needs the number the relying party shows (oauth/number_matching.py).
    number_matching: bool = False
    # RFC 9396 types this client may send as authorization_details.
    authorization_details_types: tuple[str, ...] = ()

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None

    @property
    def uses_ciba(self) -> bool:
        return CIBA_GRANT in self.grant_types

    @property
    def may_refresh(self) -> bool:
        return "refresh_token" in self.grant_types

    def public_metadata(self) -> dict[str, Any]:
        """Registration metadata without the secret hash (for CLI and admin output)."""
        return {
            "client_id": self.client_id,
            "client_name": self.name,
            "token_endpoint_auth_method": self.token_endpoint_auth_method,
            "jwks": self.jwks,
            "jwks_uri": self.jwks_uri,
            "grant_types": list(self.grant_types),
            "scope": " ".join(self.scopes),
            "backchannel_token_delivery_mode": self.backchannel_token_delivery_mode,
            "backchannel_client_notification_endpoint": (
                self.backchannel_client_notification_endpoint
            ),
            "backchannel_authentication_request_signing_alg": (
                self.backchannel_authentication_request_signing_alg
            ),
            "require_signed_request": self.require_signed_request,
            "backchannel_user_code_parameter": self.backchannel_user_code_parameter,
            "id_token_signed_response_alg": self.id_token_signed_response_alg,
            "access_token_ttl": self.access_token_ttl,
            "refresh_token_ttl": self.refresh_token_ttl,
            "max_requested_expiry": self.max_requested_expiry,
            "login_hint_token_issuers": list(self.login_hint_token_issuers),
            "authorization_details_types": list(self.authorization_details_types),
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "disabled_at": self.disabled_at.isoformat() if self.disabled_at else None,
        }


_COLUMNS = """client_id, name, secret_hash, token_endpoint_auth_method, jwks, jwks_uri,
    grant_types, scopes, backchannel_token_delivery_mode,
    backchannel_client_notification_endpoint, backchannel_authentication_request_signing_alg,
    require_signed_request, backchannel_user_code_parameter, id_token_signed_response_alg,
    access_token_ttl, refresh_token_ttl, max_requested_expiry, login_hint_token_issuers,
    created_at, disabled_at, may_enrol_users, number_matching, authorization_details_types"""


def _client(row: asyncpg.Record) -> Client:
    values = dict(row)
    values["grant_types"] = tuple(values["grant_types"])
    values["scopes"] = tuple(values["scopes"])
    values["login_hint_token_issuers"] = tuple(values["login_hint_token_issuers"] or ())
    values["authorization_details_types"] = tuple(values["authorization_details_types"])
    values["secret_hash"] = bytes(values["secret_hash"]) if values["secret_hash"] else None
    return Client(**values)


async def insert_client(conn: asyncpg.Connection, client: Client) -> Client:
    row = await conn.fetchrow(
        f"""INSERT INTO clients ({_COLUMNS.replace("created_at, disabled_at", "disabled_at")})
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                    $18, $19, $20, $21, $22)
            RETURNING {_COLUMNS}""",
        client.client_id,
        client.name,
        client.secret_hash,
        client.token_endpoint_auth_method,
        client.jwks,
        client.jwks_uri,
        list(client.grant_types),
        list(client.scopes),
        client.backchannel_token_delivery_mode,
        client.backchannel_client_notification_endpoint,
        client.backchannel_authentication_request_signing_alg,
        client.require_signed_request,
        client.backchannel_user_code_parameter,
        client.id_token_signed_response_alg,
        client.access_token_ttl,
        client.refresh_token_ttl,
        client.max_requested_expiry,
        list(client.login_hint_token_issuers),
        client.disabled_at,
        client.may_enrol_users,
        client.number_matching,
        list(client.authorization_details_types),
    )
    assert row is not None
    return _client(row)


async def select_client(conn: Queryable, client_id: str) -> Client | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM clients WHERE client_id = $1", client_id)
    return _client(row) if row else None


async def select_client_for_update(conn: asyncpg.Connection, client_id: str) -> Client | None:
    """The client, its row locked until the caller's transaction ends."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM clients WHERE client_id = $1 FOR UPDATE", client_id
    )
    return _client(row) if row else None


async def select_clients(conn: Queryable) -> list[Client]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM clients ORDER BY created_at, client_id")
    return [_client(r) for r in rows]


async def update_client_registration(conn: asyncpg.Connection, client: Client) -> Client | None:
    """Overwrite a client's registration metadata (not its id, secret, auth method,
    creation or disabled state); ``None`` if there is no such client."""
    row = await conn.fetchrow(
        f"""UPDATE clients SET
               name = $2, jwks = $3, jwks_uri = $4, grant_types = $5, scopes = $6,
               backchannel_token_delivery_mode = $7,
               backchannel_client_notification_endpoint = $8,
               backchannel_authentication_request_signing_alg = $9,
               require_signed_request = $10, backchannel_user_code_parameter = $11,
               id_token_signed_response_alg = $12, access_token_ttl = $13,
               refresh_token_ttl = $14, max_requested_expiry = $15,
               login_hint_token_issuers = $16, may_enrol_users = $17, number_matching = $18,
               authorization_details_types = $19
             WHERE client_id = $1
         RETURNING {_COLUMNS}""",
        client.client_id,
        client.name,
        client.jwks,
        client.jwks_uri,
        list(client.grant_types),
        list(client.scopes),
        client.backchannel_token_delivery_mode,
        client.backchannel_client_notification_endpoint,
        client.backchannel_authentication_request_signing_alg,
        client.require_signed_request,
        client.backchannel_user_code_parameter,
        client.id_token_signed_response_alg,
        client.access_token_ttl,
        client.refresh_token_ttl,
        client.max_requested_expiry,
        list(client.login_hint_token_issuers),
        client.may_enrol_users,
        client.number_matching,
        list(client.authorization_details_types),
    )
    return _client(row) if row else None


async def update_client_disabled(
    conn: asyncpg.Connection, client_id: str, disabled: bool
) -> Client | None:
    row = await conn.fetchrow(
        f"""UPDATE clients
               SET disabled_at = CASE WHEN $2 THEN coalesce(disabled_at, now()) END
             WHERE client_id = $1
         RETURNING {_COLUMNS}""",
        client_id,
        disabled,
    )
    return _client(row) if row else None
