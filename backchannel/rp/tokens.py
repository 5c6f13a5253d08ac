"""The token response (RFC 6749 §5.1, OIDC Core §3.1.3.3, CIBA §10.1.1 and §10.3.1)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from backchannel.rp.errors import ProtocolError


@dataclass(frozen=True)
class TokenResponse:
    """Tokens whose ID token has been verified; ``id_token_claims`` are its claims.

    ``id_token`` is None only for a refresh answer without one (OIDC Core §12.2).
    ``raw`` is the whole JSON answer.
    """

    access_token: str = field(repr=False)
    token_type: str
    expires_in: int | None
    id_token: str | None = field(repr=False)
    id_token_claims: Mapping[str, Any] | None
    refresh_token: str | None = field(repr=False)
    scope: str | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class UnverifiedTokens:
    """A token response whose fields have the right types, before its ID token is verified."""

    body: Mapping[str, Any]
    access_token: str
    token_type: str
    id_token: str | None
    refresh_token: str | None

    def verified(self, claims: Mapping[str, Any] | None) -> TokenResponse:
        expires_in = self.body.get("expires_in")
        scope = self.body.get("scope")
        return TokenResponse(
            access_token=self.access_token,
            token_type=self.token_type,
            expires_in=expires_in if isinstance(expires_in, int) else None,
            id_token=self.id_token,
            id_token_claims=claims,
            refresh_token=self.refresh_token,
            scope=scope if isinstance(scope, str) else None,
            raw=dict(self.body),
        )


def read_token_response(body: Mapping[str, Any], *, id_token_required: bool) -> UnverifiedTokens:
    """Check the fields' presence and types; the ID token is verified by the caller."""

    def optional_string(name: str) -> str | None:
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            raise ProtocolError(f"the token response's {name} is not a string")
        return value

    access_token = optional_string("access_token")
    token_type = optional_string("token_type")
    id_token = optional_string("id_token")
    if access_token is None or token_type is None:
        raise ProtocolError("the token response lacks access_token or token_type")
    if id_token is None and id_token_required:
        raise ProtocolError("the token response has no id_token")
    return UnverifiedTokens(
        body, access_token, token_type, id_token, optional_string("refresh_token")
    )
