"""Resolving the hint of an authentication request to a user (CIBA §7.1).

``login_hint`` is parsed into candidate identifiers, ``id_token_hint`` must be
an ID token we issued to the same client, and ``login_hint_token`` a JWT from
an issuer the client registered (subject identifiers per RFC 9493). A hint that
cannot be validated is ``invalid_request``; a valid hint naming nobody (or a
disabled user) is ``unknown_user_id``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from backchannel.db.clients import Client
from backchannel.db.users import LoginHint, User, select_user_by_hint, select_user_by_subject
from backchannel.errors import ExpiredLoginHintToken, InvalidRequest, UnknownUserId
from backchannel.oauth.algorithms import LOGIN_HINT_TOKEN_ALGS
from backchannel.oauth.id_tokens import verify_own_id_token
from backchannel.oauth.jwt_claims import (
    JWTRejected,
    check_audience,
    import_key_set,
    number_claim,
    peek_claims,
    verify_jws,
)
from backchannel.oauth.login_hint_parsing import normalise_hint, parse_login_hint
from backchannel.oauth.services import Services

_UNKNOWN = "the hint does not identify a known user"
# Nesting allowed in an RFC 9493 "aliases" identifier.
_MAX_ALIAS_DEPTH = 2


async def resolve_user(
    services: Services,
    client: Client,
    *,
    login_hint: str | None = None,
    id_token_hint: str | None = None,
    login_hint_token: str | None = None,
) -> User:
    """The enabled user the one given hint names; the caller ensures exactly one is given."""
    subject: str | None = None
    candidates: list[LoginHint] = []
    if login_hint is not None:
        candidates = parse_login_hint(login_hint)
    elif id_token_hint is not None:
        claims = verify_own_id_token(
            services.keys,
            id_token_hint,
            issuer=services.settings.issuer,
            client_id=client.client_id,
        )
        subject = claims["sub"]
    elif login_hint_token is not None:
        subject, candidates = _login_hint_token_subject(services, client, login_hint_token)
    else:
        raise InvalidRequest("a login hint is required")
    user: User | None = None
    if subject is not None:
        user = await select_user_by_subject(services.pool, subject)
    elif candidates:
        user = await select_user_by_hint(services.pool, candidates)
    if user is None or user.disabled:
        raise UnknownUserId(_UNKNOWN)
    return user


def _login_hint_token_subject(
    services: Services, client: Client, token: str
) -> tuple[str | None, list[LoginHint]]:
    """Verify a login_hint_token; the subject (ours) or candidate identifiers it names."""
    settings = services.settings
    try:
        issuer = peek_claims(token).get("iss")
        trusted = next(
            (e for e in client.login_hint_token_issuers if issuer and e.get("iss") == issuer),
            None,
        )
        if trusted is None:
            raise InvalidRequest("login_hint_token issuer is not trusted by this client")
        claims = verify_jws(token, import_key_set(trusted["jwks"]), LOGIN_HINT_TOKEN_ALGS)
        exp = number_claim(claims, "exp", required=False)
        if exp is not None and settings.clock_skew + exp <= time.time():
            raise ExpiredLoginHintToken("login_hint_token has expired")
        nbf = number_claim(claims, "nbf", required=False)
        if nbf is not None and nbf > time.time() + settings.clock_skew:
            raise JWTRejected("it is not valid yet (nbf)")
        if "aud" in claims:
            check_audience(
                claims, {settings.issuer, settings.backchannel_endpoint, settings.token_endpoint}
            )
    except JWTRejected as exc:
        raise InvalidRequest(f"login_hint_token refused: {exc}") from None
    except (KeyError, TypeError):
        raise InvalidRequest("login_hint_token issuer is misconfigured for this client") from None
    return _subject_of(claims, settings.issuer)


def _subject_of(claims: Mapping[str, Any], our_issuer: str) -> tuple[str | None, list[LoginHint]]:
    """From ``sub_id`` (RFC 9493), else the ``email``, ``phone_number`` or ``login_hint`` claims."""
    for name in ("sub_id", "subject"):
        identifier = claims.get(name)
        if isinstance(identifier, Mapping):
            return _from_identifier(identifier, our_issuer, 0)
    candidates: list[LoginHint] = []
    for name, kind in (("email", "email"), ("phone_number", "phone")):
        candidates += _typed(kind, claims.get(name))
    hint = claims.get("login_hint")
    if isinstance(hint, str):
        candidates += parse_login_hint(hint)
    return None, candidates


def _from_identifier(
    identifier: Mapping[str, Any], our_issuer: str, depth: int
) -> tuple[str | None, list[LoginHint]]:
    """RFC 9493 §3: a subject identifier, by its ``format``."""
    fmt = identifier.get("format", identifier.get("subject_type"))
    if fmt == "email":
        return None, _typed("email", identifier.get("email"))
    if fmt in ("phone_number", "phone"):
        return None, _typed("phone", identifier.get("phone_number", identifier.get("phone")))
    if fmt == "opaque":
        return None, _typed("account", identifier.get("id")) + _typed(
            "username", identifier.get("id")
        )
    if fmt == "iss_sub":
        sub = identifier.get("sub")
        if identifier.get("iss") == our_issuer and isinstance(sub, str) and sub:
            return sub, []
        return None, []
    if fmt == "aliases" and depth < _MAX_ALIAS_DEPTH:
        candidates: list[LoginHint] = []
        for alias in identifier.get("identifiers") or ():
            if isinstance(alias, Mapping):
                subject, found = _from_identifier(alias, our_issuer, depth + 1)
                if subject is not None:
                    return subject, []
                candidates += found
        return None, candidates
    return None, []


def _typed(kind: str, value: object) -> list[LoginHint]:
    if not isinstance(value, str):
        return []
    try:
        return [normalise_hint(kind, value)]
    except ValueError:
        return []
