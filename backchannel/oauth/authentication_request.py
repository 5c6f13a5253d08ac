"""Validation of backchannel authentication request parameters (CIBA §7.1, §7.2).

Pure: takes the parameters (from the form or from a verified request object),
the client and the settings, and returns a typed request or raises the
matching OAuth error. Resolving the hint to a user happens afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from backchannel.db.clients import Client
from backchannel.errors import InvalidRequest, InvalidScope, MissingUserCode, UnauthorizedClient
from backchannel.oauth.assurance import requested_acr
from backchannel.oauth.binding_message import check_binding_message
from backchannel.settings import Settings

HINT_PARAMS = ("login_hint_token", "id_token_hint", "login_hint")

# Parameters an authentication request may carry (in the form or a request object).
REQUEST_PARAMS = frozenset(
    {
        "scope",
        *HINT_PARAMS,
        "binding_message",
        "user_code",
        "requested_expiry",
        "acr_values",
        "client_notification_token",
        "authorization_details",
    }
)

# RFC 6750 §2.1 b64token, for client_notification_token.
# Matched with fullmatch: "$" would also match before a final line break.
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
MAX_HINT_LENGTH = 8192
MAX_NOTIFICATION_TOKEN_LENGTH = 1024
SUPPORTED_DELIVERY_MODES = frozenset({"poll", "ping", "push"})


@dataclass(frozen=True)
class AuthenticationRequest:
    scope: tuple[str, ...]
    hint_kind: str  # login_hint | id_token_hint | login_hint_token
    hint: str
    binding_message: str | None
    user_code: str | None
    requested_expiry: int | None
    expires_in: int
    acr_values: tuple[str, ...] | None
    client_notification_token: str | None
    # RFC 9396, validated by oauth/authorization_details.py (it needs the registered types).
    authorization_details: tuple[dict[str, Any], ...] | None = None


def check_client_may_use_ciba(client: Client) -> None:
    if not client.uses_ciba:
        raise UnauthorizedClient("this client is not registered for the CIBA grant")
    if client.backchannel_token_delivery_mode not in SUPPORTED_DELIVERY_MODES:
        raise UnauthorizedClient(
            f"token delivery mode {client.backchannel_token_delivery_mode!r} is not supported"
        )


def parse_authentication_request(
    params: Mapping[str, Any], client: Client, settings: Settings
) -> AuthenticationRequest:
    scope = _scope(params.get("scope"), client)
    hint_kind, hint = _hint(params)
    binding_message = params.get("binding_message")
    if binding_message is not None:
        binding_message = check_binding_message(
            binding_message, settings.binding_message_max_length
        )
    user_code = _optional_text(params, "user_code", 256)
    if client.backchannel_user_code_parameter and not user_code:
        raise MissingUserCode("this client must send the user's user_code")
    requested_expiry = _requested_expiry(params.get("requested_expiry"))
    cap = min(
        client.max_requested_expiry or settings.max_request_expiry, settings.max_request_expiry
    )
    expires_in = min(requested_expiry or settings.default_request_expiry, cap)
    acr = _optional_text(params, "acr_values", 1024)
    acr_values = tuple(acr.split()) if acr else None
    requested_acr(acr_values)  # invalid_request when it names no supported level
    notification_token = _notification_token(params, client)
    return AuthenticationRequest(
        scope=scope,
        hint_kind=hint_kind,
        hint=hint,
        binding_message=binding_message,
        user_code=user_code if client.backchannel_user_code_parameter else None,
        requested_expiry=requested_expiry,
        expires_in=expires_in,
        acr_values=acr_values,
        client_notification_token=notification_token,
    )


def _scope(value: object, client: Client) -> tuple[str, ...]:
    if value is None:
        raise InvalidRequest("scope is required")
    if not isinstance(value, str):
        raise InvalidRequest("scope must be a space-separated string")
    scopes: list[str] = []
    for item in value.split(" "):
        if not item:
            continue
        if not _SCOPE_TOKEN.fullmatch(item):
            raise InvalidScope("scope contains characters RFC 6749 does not allow")
        if item not in scopes:
            scopes.append(item)
    if "openid" not in scopes:
        raise InvalidScope("scope must include openid")
    unknown = [s for s in scopes if s not in client.scopes]
    if unknown:
        raise InvalidScope(f"scope not allowed for this client: {' '.join(unknown)}")
    return tuple(scopes)


def _hint(params: Mapping[str, Any]) -> tuple[str, str]:
    present = [name for name in HINT_PARAMS if params.get(name) is not None]
    if not present:
        raise InvalidRequest("one of login_hint_token, id_token_hint or login_hint is required")
    if len(present) > 1:
        raise InvalidRequest(
            "only one of login_hint_token, id_token_hint or login_hint may be sent"
        )
    name = present[0]
    value = params[name]
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{name} must be a non-empty string")
    if len(value) > MAX_HINT_LENGTH:
        raise InvalidRequest(f"{name} is too long")
    return name, value


def _optional_text(params: Mapping[str, Any], name: str, max_length: int) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string")
    if len(value) > max_length:
        raise InvalidRequest(f"{name} is too long")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidRequest(f"{name} contains control characters")
    return value


def _requested_expiry(value: object) -> int | None:
    """A positive integer, sent as a JSON number or as a string (CIBA §7.1)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidRequest("requested_expiry must be a positive integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:
        number = int(value)
    else:
        raise InvalidRequest("requested_expiry must be a positive integer")
    if number <= 0:
        raise InvalidRequest("requested_expiry must be a positive integer")
    return number


def _notification_token(params: Mapping[str, Any], client: Client) -> str | None:
    value = params.get("client_notification_token")
    if client.backchannel_token_delivery_mode == "poll":
        return None
    if value is None:
        raise InvalidRequest("client_notification_token is required for ping and push clients")
    if not isinstance(value, str) or not _BEARER_TOKEN.fullmatch(value):
        raise InvalidRequest("client_notification_token must have bearer token syntax")
    if len(value) > MAX_NOTIFICATION_TOKEN_LENGTH:
        raise InvalidRequest("client_notification_token is longer than 1024 characters")
    return value
