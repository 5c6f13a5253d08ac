"""Rows the tests need: clients with known secrets, users with login hints."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import asyncpg

from backchannel.db.clients import Client, insert_client
from backchannel.db.users import LoginHint, User, insert_login_hints, insert_user
from backchannel.oauth.secrets import hash_secret, new_secret

_ids = itertools.count(1)


async def create_client(conn: asyncpg.Connection, **overrides: Any) -> tuple[Client, str | None]:
    """A poll-mode client_secret_basic client unless ``overrides`` say otherwise."""
    secret = new_secret()
    fields: dict[str, Any] = {
        "client_id": f"client-{next(_ids)}",
        "name": "Acme Coffee",
        "secret_hash": hash_secret(secret),
        "token_endpoint_auth_method": "client_secret_basic",
        "jwks": None,
        "jwks_uri": None,
        "grant_types": ("urn:openid:params:grant-type:ciba", "refresh_token"),
        "scopes": ("openid", "profile", "email", "phone", "offline_access"),
        "backchannel_token_delivery_mode": "poll",
        "backchannel_client_notification_endpoint": None,
        "backchannel_authentication_request_signing_alg": None,
        "require_signed_request": False,
        "backchannel_user_code_parameter": False,
        "id_token_signed_response_alg": "ES256",
        "access_token_ttl": None,
        "refresh_token_ttl": None,
        "max_requested_expiry": None,
    }
    fields.update(overrides)
    if fields["token_endpoint_auth_method"] == "private_key_jwt":
        fields["secret_hash"] = overrides.get("secret_hash")
        secret = None
    client = await insert_client(conn, Client(**fields))
    return client, secret


async def create_user(
    conn: asyncpg.Connection,
    *,
    subject: str | None = None,
    email: str | None = None,
    phone: str | None = None,
    account: str | None = None,
    username: str | None = None,
    display_name: str = "Alice Example",
    user_code_hash: str | None = None,
) -> User:
    n = next(_ids)
    user = await insert_user(
        conn,
        subject=subject or f"user-{n}",
        display_name=display_name,
        email=email,
        phone_number=phone,
        user_code_hash=user_code_hash,
    )
    hints = [
        LoginHint(kind, value)
        for kind, value in (
            ("email", email),
            ("phone", phone),
            ("account", account),
            ("username", username),
        )
        if value
    ]
    await insert_login_hints(conn, user.user_id, hints)
    return user


def with_changes(client: Client, **changes: Any) -> Client:
    return dataclasses.replace(client, **changes)
