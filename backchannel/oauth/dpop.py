"""DPoP proofs (RFC 9449): a client proves possession of a key with each request.

A proof is a JWT in the ``DPoP`` header, signed with the private key whose
public JWK its header carries (``typ`` ``dpop+jwt``). It binds the request:
``htm`` (the method), ``htu`` (the URL without query and fragment, compared
after normalisation), ``iat`` (within the configured skew), a unique ``jti``
(remembered by every replica until the proof could no longer be accepted),
``ath`` at a resource (base64url SHA-256 of the access token), and, when the
server asks for one, its ``nonce``.

Nonces are stateless and shared by every replica: an HMAC of the current time
window under a key derived from the server's signing setup, so a nonce from
the current or the previous window is accepted and nothing is stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey

from backchannel.db.jtis import insert_jti
from backchannel.db.pool import Queryable
from backchannel.errors import InvalidDPoPProof, UseDPoPNonce
from backchannel.oauth.jwt_claims import AllowedAlgorithms, JWTRejected, peek_claims, read_header

DPOP_ALGS: tuple[str, ...] = ("ES256", "PS256", "EdDSA")
DPOP_TYP = "dpop+jwt"
MAX_PROOF_LENGTH = 8192
NONCE_WINDOW = 300  # seconds a nonce stays fresh (it is accepted one window more)
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_KEY_TYPES: dict[str, type[Key]] = {"EC": ECKey, "RSA": RSAKey, "OKP": OKPKey}
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class DPoPProof:
    """A verified proof: the key's RFC 7638 thumbprint (``cnf.jkt``) and its claims."""

    jkt: str
    jti: str
    iat: float
    claims: dict[str, Any]


def access_token_hash(access_token: str) -> str:
    """``ath``: base64url(SHA-256(ASCII(access token))) (RFC 9449 §4.2)."""
    digest = hashlib.sha256(access_token.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def normalise_htu(url: str) -> str:
    """The URL as proofs are compared (RFC 9449 §4.3, RFC 3986 §6.2.2-3): lower-case
    scheme and host, no default port, an empty path as ``/``, no query or fragment."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return ""
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", "", ""))


class DPoPNonces:
    """Server-issued nonces (RFC 9449 §8): ``window:HMAC(key, window)``."""

    def __init__(self, key: bytes, *, window: int = NONCE_WINDOW) -> None:
        self._key = key
        self._window = window

    def _for(self, window: int) -> str:
        mac = hmac.new(self._key, str(window).encode(), hashlib.sha256).digest()[:18]
        return f"{window}.{base64.urlsafe_b64encode(mac).decode('ascii')}"

    def current(self, now: float | None = None) -> str:
        return self._for(int((time.time() if now is None else now) // self._window))

    def is_fresh(self, nonce: object, now: float | None = None) -> bool:
        if not isinstance(nonce, str) or len(nonce) > 64:
            return False
        window = int((time.time() if now is None else now) // self._window)
        return any(hmac.compare_digest(nonce, self._for(w)) for w in (window, window - 1))


def verify_dpop_proof(
    proof: str,
    *,
    method: str,
    url: str,
    skew: float,
    nonces: DPoPNonces | None = None,
    access_token: str | None = None,
    algorithms: Collection[str] = DPOP_ALGS,
    now: float | None = None,
) -> DPoPProof:
    """Check everything a proof says except its ``jti`` (see :func:`record_dpop_jti`).

    ``nonces`` given: the proof must carry a fresh server nonce
    (:class:`UseDPoPNonce` otherwise). ``access_token`` given: ``ath`` must match.
    """
    now = time.time() if now is None else now
    if len(proof) > MAX_PROOF_LENGTH:
        raise InvalidDPoPProof("the DPoP proof is too long")
    try:
        header = read_header(proof)
        claims = peek_claims(proof)
    except JWTRejected as exc:
        raise InvalidDPoPProof(f"the DPoP proof is not a JWT: {exc}") from None
    if header.get("typ") != DPOP_TYP:
        raise InvalidDPoPProof(f"the DPoP proof's typ must be {DPOP_TYP}")
    alg = header["alg"]
    if alg not in algorithms:
        raise InvalidDPoPProof(f"DPoP proofs are accepted signed with {', '.join(algorithms)}")
    key = _public_key(header.get("jwk"))
    try:
        registry = AllowedAlgorithms(algorithms=[alg], strict_check_header=False)
        jws.deserialize_compact(proof, key, registry=registry)
    except BadSignatureError:
        raise InvalidDPoPProof("the DPoP proof's signature is invalid") from None
    except (JoseError, ValueError, TypeError):
        raise InvalidDPoPProof("the DPoP proof cannot be verified with its jwk") from None
    _check_claims(claims, method=method, url=url, skew=skew, now=now)
    if access_token is not None and not hmac.compare_digest(
        str(claims.get("ath", "")), access_token_hash(access_token)
    ):
        raise InvalidDPoPProof("the DPoP proof's ath does not match the access token")
    if nonces is not None and not nonces.is_fresh(claims.get("nonce"), now):
        raise UseDPoPNonce("a fresh DPoP nonce is required", nonce=nonces.current(now))
    return DPoPProof(key.thumbprint(), claims["jti"], float(claims["iat"]), claims)


def _public_key(jwk: object) -> Key:
    if not isinstance(jwk, dict) or not isinstance(jwk.get("kty"), str):
        raise InvalidDPoPProof("the DPoP proof's header must carry the public jwk")
    if _PRIVATE_MEMBERS & jwk.keys():
        raise InvalidDPoPProof("the DPoP proof's jwk must not contain a private key")
    key_type = _KEY_TYPES.get(jwk["kty"])
    if key_type is None:
        raise InvalidDPoPProof("the DPoP proof's jwk has an unsupported kty")
    try:
        key: Key = key_type.import_key(dict(jwk))
    except (JoseError, ValueError, TypeError, KeyError):
        raise InvalidDPoPProof("the DPoP proof's jwk is not a valid public key") from None
    if key_type is RSAKey and int(getattr(key.public_key, "key_size", 0)) < 2048:
        raise InvalidDPoPProof("the DPoP proof's RSA key is shorter than 2048 bits")
    return key


def _check_claims(
    claims: dict[str, Any], *, method: str, url: str, skew: float, now: float
) -> None:
    jti, htm, htu, iat = (claims.get(name) for name in ("jti", "htm", "htu", "iat"))
    if not isinstance(jti, str) or not jti or len(jti) > 256:
        raise InvalidDPoPProof("the DPoP proof needs a jti")
    if htm != method:
        raise InvalidDPoPProof("the DPoP proof was made for another HTTP method")
    if not isinstance(htu, str) or normalise_htu(htu) != normalise_htu(url):
        raise InvalidDPoPProof("the DPoP proof was made for another URL")
    if isinstance(iat, bool) or not isinstance(iat, int | float):
        raise InvalidDPoPProof("the DPoP proof needs a numeric iat")
    if abs(now - iat) > skew:
        raise InvalidDPoPProof("the DPoP proof is stale or from the future (iat)")


async def record_dpop_jti(conn: Queryable, proof: DPoPProof, *, purpose: str, skew: float) -> None:
    """Remember the proof's ``jti`` for its key until it could no longer be accepted;
    a replay (on any replica) is :class:`InvalidDPoPProof`."""
    expires_at = datetime.fromtimestamp(proof.iat + skew + 1, UTC)
    if not await insert_jti(
        conn, issuer=f"dpop:{proof.jkt}", purpose=purpose, jti=proof.jti, expires_at=expires_at
    ):
        raise InvalidDPoPProof("the DPoP proof was used already (jti)")
