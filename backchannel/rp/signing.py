"""JWTs the client signs: client assertions (RFC 7523) and signed requests (CIBA §7.1.1)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import Key

from backchannel.rp.algorithms import ASYMMETRIC_ALGS, key_fits
from backchannel.rp.errors import UsageError


def new_jti() -> str:
    """A unique JWT ID: 192 random bits."""
    return secrets.token_urlsafe(24)


def check_signing_key(key: Key, alg: str) -> None:
    """Refuse, before anything is sent, a key that cannot sign ``alg`` or is public only."""
    if alg not in ASYMMETRIC_ALGS:
        raise UsageError(f"{alg} is not an asymmetric JWS algorithm")
    if not key_fits(key, alg):
        raise UsageError(f"a {key.key_type} key cannot sign {alg}")
    if not key.is_private:
        raise UsageError("the signing key has no private part")


def sign_jwt(claims: Mapping[str, Any], key: Key, alg: str, typ: str | None = None) -> str:
    """A compact JWS of ``claims``; the header names ``alg``, the key's ``kid`` and ``typ``."""
    header: dict[str, Any] = {"alg": alg}
    if key.kid:
        header["kid"] = key.kid
    if typ:
        header["typ"] = typ
    try:
        return jwt.encode(header, dict(claims), key, algorithms=[alg])
    except JoseError as exc:
        raise UsageError(f"cannot sign with this key: {exc}") from exc
