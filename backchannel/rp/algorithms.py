"""The JWS algorithms the client signs and verifies with (RFC 7518 §3, RFC 8037, RFC 9864).

Only asymmetric ones: ``none`` and the HMAC family are never accepted for an
ID token, and a client never signs with a shared secret.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

from joserfc.jwk import Key

from backchannel.rp.errors import UsageError

# The key type (and curve) each algorithm needs.
KEY_TYPES: dict[str, tuple[str, str | None]] = {
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "EdDSA": ("OKP", None),
    "Ed25519": ("OKP", "Ed25519"),
}
ASYMMETRIC_ALGS: tuple[str, ...] = tuple(KEY_TYPES)

_HASHES: dict[str, Callable[[bytes], hashlib._Hash]] = {
    "256": hashlib.sha256,
    "384": hashlib.sha384,
    "512": hashlib.sha512,
}


def key_fits(key: Key, alg: str) -> bool:
    """Whether ``key`` can verify (or sign) with ``alg``."""
    wanted = KEY_TYPES.get(alg)
    if wanted is None or key.key_type != wanted[0]:
        return False
    curve = wanted[1]
    return curve is None or key.get("crv") == curve


def default_alg(key: Key) -> str:
    """The algorithm to sign with when the caller names none: ES256/384/512, PS256 or EdDSA."""
    if key.key_type == "EC":
        by_curve = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
        alg = by_curve.get(str(key.get("crv")))
        if alg is not None:
            return alg
    if key.key_type == "RSA":
        return "PS256"
    if key.key_type == "OKP" and key.get("crv") == "Ed25519":
        return "EdDSA"
    raise UsageError(f"no signing algorithm for a {key.key_type} key; pass alg=")


def token_hash(value: str, alg: str, curve: str | None = None) -> str:
    """Left half of the hash of ``value`` that matches ``alg``, base64url (OIDC Core §3.1.3.6).

    The ``at_hash`` and CIBA's ``urn:openid:params:jwt:claim:rt_hash`` (§10.3.1).
    EdDSA over Ed25519 hashes with SHA-512, as the OpenID Foundation specified.
    """
    if alg in ("EdDSA", "Ed25519"):
        if alg == "EdDSA" and curve not in (None, "Ed25519"):
            raise ValueError(f"no token hash is defined for EdDSA over {curve}")
        size = "512"
    else:
        size = alg[-3:]
    hash_function = _HASHES[size]
    digest = hash_function(value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode("ascii")
