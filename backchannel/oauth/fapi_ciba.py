"""The FAPI-CIBA profile, enforced per client (``profile = "fapi-ciba"``).

FAPI-CIBA (on FAPI 1.0 Advanced, with FAPI 2.0's DPoP as the second way to
constrain tokens) asks of a bank's client: signed authentication requests,
strong client authentication, sender-constrained access tokens, no push mode,
something the user can check on every request, and ID tokens signed with
ES256 or PS256. The rules are checked when the client is registered or
changed (every problem listed) and again on every request, so that each
refusal names the rule it broke.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from backchannel.errors import InvalidClient, InvalidRequest, UnauthorizedClient

PROFILE = "fapi-ciba"
PROFILES: tuple[str, ...] = (PROFILE,)
ALGS: tuple[str, ...] = ("ES256", "PS256")
AUTH_METHODS: tuple[str, ...] = (
    "private_key_jwt",
    "tls_client_auth",
    "self_signed_tls_client_auth",
)
DELIVERY_MODES: tuple[str, ...] = ("poll", "ping")

SIGNED_REQUESTS = "FAPI-CIBA: authentication requests must be signed (ES256 or PS256)"
CLIENT_AUTHENTICATION = (
    "FAPI-CIBA: clients must authenticate with private_key_jwt, tls_client_auth "
    "or self_signed_tls_client_auth"
)
SENDER_CONSTRAINED = "FAPI-CIBA: access tokens must be sender-constrained (DPoP or mTLS)"
NO_PUSH = "FAPI-CIBA: tokens are delivered by poll or ping, never push"
BINDING = "FAPI-CIBA: every request must carry a binding_message or authorization_details"
ID_TOKEN_ALG = "FAPI-CIBA: ID tokens must be signed with ES256 or PS256"


class ProfileMetadata(Protocol):
    """What the rules read: a registration or a stored client."""

    @property
    def profile(self) -> str | None: ...
    @property
    def token_endpoint_auth_method(self) -> str: ...
    @property
    def require_signed_request(self) -> bool: ...
    @property
    def backchannel_authentication_request_signing_alg(self) -> str | None: ...
    @property
    def dpop_bound_access_tokens(self) -> bool: ...
    @property
    def tls_client_certificate_bound_access_tokens(self) -> bool: ...
    @property
    def backchannel_token_delivery_mode(self) -> str: ...
    @property
    def id_token_signed_response_alg(self) -> str: ...


def applies(client: ProfileMetadata) -> bool:
    return client.profile == PROFILE


def registration_problems(reg: ProfileMetadata) -> list[str]:
    """Every rule a registration under the profile breaks, each with what to change."""
    if not applies(reg):
        return []
    problems = []
    alg = reg.backchannel_authentication_request_signing_alg
    if not reg.require_signed_request or alg not in ALGS:
        problems.append(
            f"{SIGNED_REQUESTS}: register require_signed_request with "
            f"backchannel_authentication_request_signing_alg ES256 or PS256 (now "
            f"require_signed_request={str(reg.require_signed_request).lower()}, alg={alg})"
        )
    if reg.token_endpoint_auth_method not in AUTH_METHODS:
        problems.append(
            f"{CLIENT_AUTHENTICATION} (now {reg.token_endpoint_auth_method}); "
            "the method is chosen when the client is created"
        )
    if not (reg.dpop_bound_access_tokens or reg.tls_client_certificate_bound_access_tokens):
        problems.append(
            f"{SENDER_CONSTRAINED}: register dpop_bound_access_tokens or "
            "tls_client_certificate_bound_access_tokens"
        )
    if reg.backchannel_token_delivery_mode not in DELIVERY_MODES:
        problems.append(f"{NO_PUSH} (now {reg.backchannel_token_delivery_mode})")
    if reg.id_token_signed_response_alg not in ALGS:
        problems.append(f"{ID_TOKEN_ALG} (now {reg.id_token_signed_response_alg})")
    return problems


def check_client_auth_method(client: ProfileMetadata) -> None:
    """Refuse a profile client that authenticated with a method the profile forbids."""
    if applies(client) and client.token_endpoint_auth_method not in AUTH_METHODS:
        raise InvalidClient(CLIENT_AUTHENTICATION)


def check_request_form(client: ProfileMetadata, *, signed: bool) -> None:
    """The profile's rules for how a backchannel authentication request comes
    (FAPI-CIBA §5.2.2): from a poll or ping client, signed."""
    if not applies(client):
        return
    if client.backchannel_token_delivery_mode not in DELIVERY_MODES:
        raise UnauthorizedClient(NO_PUSH)
    if not signed:
        raise InvalidRequest(SIGNED_REQUESTS)


def check_request_parameters(client: ProfileMetadata, params: Mapping[str, Any]) -> None:
    """The profile's rule for what a request says: something the user can check,
    a ``binding_message`` or ``authorization_details`` (either, or both)."""
    if not applies(client):
        return
    if not _present(params.get("binding_message")) and not _present(
        params.get("authorization_details")
    ):
        raise InvalidRequest(BINDING)


def request_signing_algs(client: ProfileMetadata, algs: tuple[str, ...]) -> tuple[str, ...]:
    """``algs`` as the profile narrows them for this client."""
    return tuple(a for a in algs if a in ALGS) if applies(client) else algs


def check_token_request(client: ProfileMetadata, *, constrained: bool) -> None:
    """The profile's rules for a token request: a sender-constrained token, a
    FAPI signing algorithm for the ID token."""
    if not applies(client):
        return
    if not constrained:
        raise InvalidRequest(SENDER_CONSTRAINED)
    if client.id_token_signed_response_alg not in ALGS:
        raise UnauthorizedClient(ID_TOKEN_ALG)


def _present(value: object) -> bool:
    if value is None:
        return False
    if isinstance(value, str | list | dict):
        return bool(value.strip() if isinstance(value, str) else value)
    return True
