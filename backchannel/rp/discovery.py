"""Provider metadata (OIDC Discovery §3 and §4, RFC 8414 §3, CIBA §4).

The document is fetched from ``<issuer>/.well-known/openid-configuration``;
its ``issuer`` must be exactly the configured one (OIDC Discovery §4.3), so a
document served elsewhere cannot point the client at another provider's keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from backchannel.rp.errors import ProtocolError

WELL_KNOWN = "/.well-known/openid-configuration"


@dataclass(frozen=True)
class ProviderMetadata:
    """What the client uses of the OpenID Provider Configuration; ``raw`` holds all of it."""

    issuer: str
    token_endpoint: str
    backchannel_authentication_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None = None
    revocation_endpoint: str | None = None
    introspection_endpoint: str | None = None
    backchannel_token_delivery_modes_supported: tuple[str, ...] = ()
    id_token_signing_alg_values_supported: tuple[str, ...] = ()
    backchannel_user_code_parameter_supported: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def endpoint(self, name: str) -> str:
        """The URL of an optional endpoint, e.g. ``"userinfo_endpoint"``; ProtocolError if none."""
        url = getattr(self, name)
        if not isinstance(url, str):
            raise ProtocolError(f"the provider publishes no {name}")
        return url


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + WELL_KNOWN


def parse_provider_metadata(document: Mapping[str, Any], expected_issuer: str) -> ProviderMetadata:
    """The metadata of ``document``, checked against the issuer the client was configured with."""
    issuer = document.get("issuer")
    if issuer != expected_issuer:
        raise ProtocolError(
            f"discovery names issuer {issuer!r}, not the configured {expected_issuer!r}"
        )

    def optional_url(name: str) -> str | None:
        value = document.get(name)
        return None if value is None else required_url(name)

    def required_url(name: str) -> str:
        value = document.get(name)
        if not isinstance(value, str) or not value.startswith(("https://", "http://")):
            raise ProtocolError(f"discovery: {name} is missing or not a URL")
        return value

    def strings(name: str) -> tuple[str, ...]:
        value = document.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ProtocolError(f"discovery: {name} is not a list of strings")
        return tuple(value)

    return ProviderMetadata(
        issuer=expected_issuer,
        token_endpoint=required_url("token_endpoint"),
        backchannel_authentication_endpoint=required_url("backchannel_authentication_endpoint"),
        jwks_uri=required_url("jwks_uri"),
        userinfo_endpoint=optional_url("userinfo_endpoint"),
        revocation_endpoint=optional_url("revocation_endpoint"),
        introspection_endpoint=optional_url("introspection_endpoint"),
        backchannel_token_delivery_modes_supported=strings(
            "backchannel_token_delivery_modes_supported"
        ),
        id_token_signing_alg_values_supported=strings("id_token_signing_alg_values_supported"),
        backchannel_user_code_parameter_supported=(
            document.get("backchannel_user_code_parameter_supported") is True
        ),
        raw=dict(document),
    )
