"""The backchannel authentication request (CIBA §7.1, §7.1.1) and its answer (§7.3)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from joserfc.jwk import Key

from backchannel.rp.errors import ProtocolError, UsageError
from backchannel.rp.signing import new_jti, sign_jwt

HINTS = ("login_hint", "id_token_hint", "login_hint_token")
DEFAULT_INTERVAL = 5  # CIBA §7.3: without an interval the client waits 5 seconds


@dataclass(frozen=True)
class AuthenticationStarted:
    """The §7.3 answer: poll with ``auth_req_id`` no more often than every ``interval``
    seconds, for ``expires_in`` seconds. ``number_match`` is the number to show the user
    when the provider sends one (backchannel's number matching)."""

    auth_req_id: str
    expires_in: int
    interval: int = DEFAULT_INTERVAL
    number_match: str | None = None


def _space_separated(value: str | Sequence[str] | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return " ".join(value)


def request_parameters(
    *,
    scope: str | Sequence[str],
    login_hint: str | None,
    id_token_hint: str | None,
    login_hint_token: str | None,
    binding_message: str | None,
    requested_expiry: int | None,
    authorization_details: Sequence[Mapping[str, Any]] | None,
    user_code: str | None,
    acr_values: str | Sequence[str] | None,
    client_notification_token: str | None,
) -> dict[str, Any]:
    """The §7.1 parameters as JSON values; exactly one hint, checked before anything is sent."""
    hints = {
        "login_hint": login_hint,
        "id_token_hint": id_token_hint,
        "login_hint_token": login_hint_token,
    }
    given = [name for name, value in hints.items() if value is not None]
    if len(given) != 1:
        named = ", ".join(given) if given else "none"
        raise UsageError(
            f"exactly one of login_hint, id_token_hint or login_hint_token is needed (got {named})"
        )
    scope_text = _space_separated(scope)
    if not scope_text or "openid" not in scope_text.split():
        raise UsageError("scope must contain openid (CIBA §7.1)")
    if requested_expiry is not None and (
        isinstance(requested_expiry, bool) or requested_expiry <= 0
    ):
        raise UsageError("requested_expiry must be a positive number of seconds")
    params: dict[str, Any] = {
        "scope": scope_text,
        given[0]: hints[given[0]],
        "binding_message": binding_message,
        "requested_expiry": requested_expiry,
        "authorization_details": (
            [dict(detail) for detail in authorization_details]
            if authorization_details is not None
            else None
        ),
        "user_code": user_code,
        "acr_values": _space_separated(acr_values),
        "client_notification_token": client_notification_token,
    }
    return {name: value for name, value in params.items() if value is not None}


def as_form(params: Mapping[str, Any]) -> dict[str, str]:
    """Form encoding: numbers as text, ``authorization_details`` as JSON (RFC 9396 §2)."""
    form: dict[str, str] = {}
    for name, value in params.items():
        form[name] = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return form


def signed_request(
    params: Mapping[str, Any],
    *,
    client_id: str,
    issuer: str,
    key: Key,
    alg: str,
    now: float,
    lifetime: int = 300,
) -> str:
    """The ``request`` parameter (CIBA §7.1.1): the parameters as claims of a JWS with
    ``iss`` = client_id, ``aud`` = the issuer, ``iat`` = ``nbf`` = now, ``exp`` and a ``jti``."""
    issued_at = int(now)
    claims = {
        **params,
        "iss": client_id,
        "aud": issuer,
        "iat": issued_at,
        "nbf": issued_at,
        "exp": issued_at + lifetime,
        "jti": new_jti(),
    }
    return sign_jwt(claims, key, alg)


def parse_started(body: Mapping[str, Any]) -> AuthenticationStarted:
    """The §7.3 answer, checked."""
    auth_req_id = body.get("auth_req_id")
    expires_in = body.get("expires_in")
    interval = body.get("interval", DEFAULT_INTERVAL)
    number_match = body.get("number_match")
    if not isinstance(auth_req_id, str) or not auth_req_id:
        raise ProtocolError("the authentication answer has no auth_req_id")
    if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in <= 0:
        raise ProtocolError("the authentication answer has no positive integer expires_in")
    if isinstance(interval, bool) or not isinstance(interval, int):
        raise ProtocolError("the authentication answer's interval is not an integer")
    if number_match is not None and not isinstance(number_match, str):
        number_match = str(number_match)
    return AuthenticationStarted(auth_req_id, expires_in, max(1, interval), number_match)
