"""Client authentication (RFC 6749 §2.3.1, OIDC Core §9, RFC 7523 §2.2 and §3).

Each method adds its credentials to a request's form and headers. CIBA §7.1
has the client authenticate at the backchannel endpoint exactly as at the
token endpoint; the same goes for revocation and introspection.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote_plus

from joserfc.jwk import Key

from backchannel.rp.algorithms import default_alg
from backchannel.rp.signing import check_signing_key, new_jti, sign_jwt

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class ClientAuth(Protocol):
    """How the client proves who it is; ``issuer`` is the assertion audience."""

    @property
    def client_id(self) -> str: ...

    def apply(
        self, form: MutableMapping[str, str], headers: MutableMapping[str, str], *, issuer: str
    ) -> None: ...


@dataclass(frozen=True)
class ClientSecretBasic:
    """HTTP Basic with the form-urlencoded client_id and secret (RFC 6749 §2.3.1)."""

    client_id: str
    client_secret: str = field(repr=False)

    def apply(
        self, form: MutableMapping[str, str], headers: MutableMapping[str, str], *, issuer: str
    ) -> None:
        user = quote_plus(self.client_id, safe="")
        password = quote_plus(self.client_secret, safe="")
        credentials = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {credentials}"


@dataclass(frozen=True)
class ClientSecretPost:
    """``client_id`` and ``client_secret`` in the form body (RFC 6749 §2.3.1)."""

    client_id: str
    client_secret: str = field(repr=False)

    def apply(
        self, form: MutableMapping[str, str], headers: MutableMapping[str, str], *, issuer: str
    ) -> None:
        form["client_id"] = self.client_id
        form["client_secret"] = self.client_secret


@dataclass(frozen=True)
class PrivateKeyJwt:
    """A fresh signed assertion per request (RFC 7523 §3, OIDC Core §9 ``private_key_jwt``).

    ``iss`` = ``sub`` = client_id, ``aud`` = the issuer, ``iat``, ``exp`` =
    ``iat`` + ``lifetime`` and a unique ``jti``. ``alg`` defaults from the key
    (ES256 for P-256, PS256 for RSA, EdDSA for Ed25519).
    """

    client_id: str
    key: Key = field(repr=False)
    alg: str | None = None
    lifetime: int = 60
    now: Callable[[], float] = field(default=time.time, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_signing_key(self.key, self.signing_alg)

    @property
    def signing_alg(self) -> str:
        return self.alg or default_alg(self.key)

    def assertion(self, issuer: str) -> str:
        issued_at = int(self.now())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": issuer,
            "iat": issued_at,
            "exp": issued_at + self.lifetime,
            "jti": new_jti(),
        }
        return sign_jwt(claims, self.key, self.signing_alg)

    def apply(
        self, form: MutableMapping[str, str], headers: MutableMapping[str, str], *, issuer: str
    ) -> None:
        form["client_assertion_type"] = JWT_BEARER
        form["client_assertion"] = self.assertion(issuer)
