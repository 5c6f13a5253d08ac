"""Verifying JWTs from outside: compact JWS over a key set, then time and audience claims.

Shared by client assertions (RFC 7523 §3), signed authentication requests
(CIBA §7.1.1) and login_hint_tokens. Errors are :class:`JWTRejected` with a
short message that is safe to show; callers turn it into their OAuth error.
The clock is injectable (``now=``) so expiry is testable.
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any

from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError, UnsupportedAlgorithmError
from joserfc.jwa import JWSAlgModel
from joserfc.jwk import Key, KeySet
from joserfc.jws import JWSRegistry

from backchannel.db.jtis import insert_jti
from backchannel.db.pool import Queryable
from backchannel.untrusted_json import UntrustedJSON, parse_untrusted_json

# RFC 7518 §3.3 / FAPI: RSA keys shorter than this are refused.
MIN_RSA_BITS = 2048
MAX_JTI_LENGTH = 256


class AllowedAlgorithms(JWSRegistry):
    """Only the algorithms named, and no SecurityWarning: joserfc flags "EdDSA" as
    superseded by RFC 9864, yet it is what clients send and what we allow. Headers
    may carry a public JWK (DPoP proofs): an RSA key does not fit joserfc's 512 bytes."""

    max_header_length = 4096

    def get_alg(self, name: str) -> JWSAlgModel:
        if name not in self.algorithms or not self.allowed or name not in self.allowed:
            raise UnsupportedAlgorithmError(f"algorithm {name} is not allowed")
        return self.algorithms[name]


class JWTRejected(Exception):
    """A JWT failed verification; ``str(exc)`` is a short, safe description."""


class UnknownSigningKey(JWTRejected):
    """No key in the set fits the token's ``kid`` and ``alg`` (a refetch may help)."""


def _b64_json(segment: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise JWTRejected("not a valid JWT") from None
    try:
        return parse_untrusted_json(raw)
    except UntrustedJSON as exc:
        raise JWTRejected(f"not a valid JWT: {exc}") from None


def read_header(token: str) -> dict[str, Any]:
    """The unverified header of a compact JWS; JWE and anything else is refused.

    Header and payload are both read within the bounds of ``untrusted_json``
    here, before any JOSE library parses them."""
    parts = token.split(".")
    if len(parts) == 5:
        raise JWTRejected("encrypted JWTs are not accepted")
    if len(parts) != 3 or not all(parts[:2]):
        raise JWTRejected("not a compact signed JWT")
    header = _b64_json(parts[0])
    if not isinstance(header, dict) or not isinstance(header.get("alg"), str):
        raise JWTRejected("JWT header has no alg")
    if parts[1]:
        _b64_json(parts[1])
    return header


def peek_claims(token: str) -> dict[str, Any]:
    """The unverified claims, only to choose the key to verify with."""
    parts = token.split(".")
    if len(parts) != 3:
        raise JWTRejected("not a compact signed JWT")
    claims = _b64_json(parts[1])
    if not isinstance(claims, dict):
        raise JWTRejected("JWT claims are not a JSON object")
    return claims


def import_key_set(jwks: Mapping[str, Any]) -> KeySet:
    """A joserfc key set from a JWKS document; :class:`JWTRejected` if unusable."""
    try:
        return KeySet.import_key_set(dict(jwks))  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError):
        raise JWTRejected("the registered keys are unusable") from None


def _fits(key: Key, alg: str, kid: str | None) -> bool:
    if kid is not None and key.kid != kid:
        return False
    try:
        JWSRegistry.algorithms[alg].check_key(key)
    except JoseError:
        return False
    if key.key_type == "RSA":
        return int(getattr(key.public_key, "key_size", 0)) >= MIN_RSA_BITS
    return True


def verify_jws(token: str, keys: KeySet, algorithms: Collection[str]) -> dict[str, Any]:
    """Verify a compact JWS signed with one of ``algorithms`` by a key in ``keys``; its claims."""
    header = read_header(token)
    alg = header["alg"]
    if alg not in algorithms or alg not in JWSRegistry.algorithms:
        raise JWTRejected(f"signing algorithm {alg} is not allowed")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise JWTRejected("kid must be a string")
    candidates = [key for key in keys if _fits(key, alg, kid)]
    if not candidates:
        raise UnknownSigningKey("no registered key matches the JWT's kid and alg")
    registry = AllowedAlgorithms(algorithms=[alg], strict_check_header=False)
    for key in candidates:
        try:
            decoded = jwt.decode(token, key, registry=registry)
        except BadSignatureError:
            continue
        except (JoseError, ValueError):
            raise JWTRejected("not a valid JWT") from None
        return dict(decoded.claims)
    raise JWTRejected("JWT signature is invalid")


def number_claim(claims: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise JWTRejected(f"the {name} claim is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise JWTRejected(f"the {name} claim must be a number")
    try:
        number = float(value)  # an int beyond a float's range overflows
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise JWTRejected(f"the {name} claim must be a number")
    return number


def string_claim(claims: Mapping[str, Any], name: str, *, max_length: int = 1024) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise JWTRejected(f"the {name} claim is required")
    if len(value) > max_length:
        raise JWTRejected(f"the {name} claim is too long")
    return value


def check_times(
    claims: Mapping[str, Any],
    *,
    skew: float,
    now: float | None = None,
    require: Collection[str] = ("exp",),
    max_lifetime: float | None = None,
    max_ahead: float | None = None,
) -> None:
    """RFC 7519 §4.1.4-6: ``exp`` not past, ``nbf`` and ``iat`` not in the future, within skew.

    ``max_lifetime`` bounds ``exp - nbf`` (or ``exp - iat`` without nbf);
    ``max_ahead`` bounds how far ``exp`` may lie beyond ``now``.
    """
    now = time.time() if now is None else now
    exp = number_claim(claims, "exp", required="exp" in require)
    nbf = number_claim(claims, "nbf", required="nbf" in require)
    iat = number_claim(claims, "iat", required="iat" in require)
    if exp is not None and now >= exp + skew:
        raise JWTRejected("the JWT has expired")
    if nbf is not None and nbf > now + skew:
        raise JWTRejected("the JWT is not valid yet (nbf)")
    if iat is not None and iat > now + skew:
        raise JWTRejected("the JWT was issued in the future (iat)")
    if exp is not None and max_lifetime is not None:
        start = nbf if nbf is not None else iat
        if start is not None and exp - start > max_lifetime:
            raise JWTRejected(f"the JWT lifetime exceeds {int(max_lifetime)} seconds")
    if exp is not None and max_ahead is not None and exp - now > max_ahead + skew:
        raise JWTRejected(f"the JWT expires more than {int(max_ahead)} seconds ahead")


def check_audience(claims: Mapping[str, Any], accepted: Collection[str]) -> None:
    """RFC 7519 §4.1.3: ``aud`` (a string or a list) must name one of ``accepted``."""
    aud = claims.get("aud")
    values = [aud] if isinstance(aud, str) else aud
    if not isinstance(values, list) or not values:
        raise JWTRejected("the aud claim is required")
    if not any(isinstance(v, str) and v in accepted for v in values):
        raise JWTRejected("the aud claim does not name this server")


def expiry_of(claims: Mapping[str, Any]) -> float:
    """``exp`` of claims already checked by :func:`check_times`."""
    exp = number_claim(claims, "exp", required=True)
    assert exp is not None
    return exp


async def record_first_use(
    conn: Queryable,
    claims: Mapping[str, Any],
    *,
    issuer: str,
    purpose: str,
    skew: int,
) -> bool:
    """Remember the token's ``jti`` until its ``exp`` (plus ``skew``); False on a replay."""
    expires = datetime.fromtimestamp(expiry_of(claims) + skew, UTC)
    return await insert_jti(
        conn, issuer=issuer, purpose=purpose, jti=claims["jti"], expires_at=expires
    )
