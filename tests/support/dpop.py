"""A client's DPoP key, making proofs (RFC 9449) as a relying party would."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from joserfc import jws
from joserfc.jwk import ECKey, Key

from backchannel.oauth.dpop import access_token_hash
from backchannel.oauth.jwt_claims import AllowedAlgorithms


@dataclass
class DPoPKey:
    key: Key = field(default_factory=lambda: ECKey.generate_key("P-256", private=True))
    alg: str = "ES256"

    @property
    def jkt(self) -> str:
        return self.key.thumbprint()

    def proof(
        self,
        method: str,
        url: str,
        *,
        access_token: str | None = None,
        header: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A proof for ``method url``; ``header`` and ``claims`` override (None removes)."""
        body: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method,
            "htu": url,
            "iat": int(time.time()),
        }
        if access_token is not None:
            body["ath"] = access_token_hash(access_token)
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        protected = {
            "typ": "dpop+jwt",
            "alg": self.alg,
            "jwk": self.key.as_dict(private=False),
            **(header or {}),
        }
        protected = {k: v for k, v in protected.items() if v is not None}
        registry = AllowedAlgorithms(algorithms=[self.alg], strict_check_header=False)
        return jws.serialize_compact(protected, _json(body), self.key, registry=registry)


def _json(claims: dict[str, Any]) -> bytes:
    import json

    return json.dumps(claims, separators=(",", ":")).encode()
