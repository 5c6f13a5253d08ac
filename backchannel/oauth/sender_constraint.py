"""Sender-constrained access tokens: DPoP (RFC 9449) and mutual TLS (RFC 8705 §3).

At the token endpoint, :func:`bind_token_request` checks the request's DPoP
proof and decides what the tokens will be bound to: the proof's key
(``cnf.jkt``), the client's TLS certificate (``cnf.x5t#S256``), both, or
nothing. At a resource (``/userinfo``), :func:`check_token_presentation`
makes the presenter prove the same key or certificate. A DPoP-bound token
must come with the ``DPoP`` scheme and a proof over it (``ath``); presented as
a bearer token it is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from backchannel.db.clients import Client
from backchannel.db.tokens import AccessTokenRecord
from backchannel.errors import (
    InvalidDPoPProof,
    InvalidRequest,
    InvalidToken,
    OAuthError,
    UseDPoPNonce,
    clean_description,
)
from backchannel.oauth.client_certificates import ClientCertificate
from backchannel.oauth.dpop import DPOP_ALGS, DPoPNonces, record_dpop_jti, verify_dpop_proof
from backchannel.oauth.fapi_ciba import check_token_request
from backchannel.oauth.services import Services

DPOP_JTI_PURPOSE = "dpop"
DPOP_NONCE_SECRET = "dpop_nonce"


@dataclass(frozen=True)
class TokenBinding:
    """What the tokens of one token request are bound to, and the nonce to hand out."""

    dpop_jkt: str | None = None
    x5t_s256: str | None = None
    nonce: str | None = None  # the current DPoP-Nonce, when this client's proofs need one

    @property
    def token_type(self) -> str:
        return "DPoP" if self.dpop_jkt is not None else "Bearer"

    def cnf(self) -> dict[str, str] | None:
        """The ``cnf`` claim (RFC 7800) of the tokens, None when unbound."""
        cnf = {}
        if self.dpop_jkt is not None:
            cnf["jkt"] = self.dpop_jkt
        if self.x5t_s256 is not None:
            cnf["x5t#S256"] = self.x5t_s256
        return cnf or None

    def headers(self) -> dict[str, str]:
        return {"DPoP-Nonce": self.nonce} if self.nonce is not None else {}


UNBOUND = TokenBinding()


def nonces_for(services: Services, client: Client) -> DPoPNonces | None:
    """The nonces this client's proofs must carry; None if they need none."""
    if client.require_dpop_nonce or services.settings.dpop_nonce_required:
        return services.dpop_nonces
    return None


async def _verified_proof_jkt(
    services: Services,
    client: Client,
    proofs: Sequence[str],
    *,
    method: str,
    urls: Sequence[str],
    access_token: str | None = None,
) -> str:
    if len(proofs) != 1:
        raise InvalidDPoPProof("send exactly one DPoP header")
    settings = services.settings
    proof = verify_dpop_proof(
        proofs[0],
        method=method,
        url=urls,
        skew=settings.dpop_proof_max_age,
        nonces=nonces_for(services, client),
        access_token=access_token,
    )
    await record_dpop_jti(
        services.pool, proof, purpose=DPOP_JTI_PURPOSE, skew=settings.dpop_proof_max_age
    )
    return proof.jkt


async def bind_token_request(
    services: Services,
    client: Client,
    *,
    proofs: Sequence[str],
    certificate: ClientCertificate | None,
) -> TokenBinding:
    """Check the DPoP proof of a token request (RFC 9449 §5) and the client's
    registered binding; return what the tokens are to be bound to."""
    settings = services.settings
    nonces = nonces_for(services, client)
    nonce = nonces.current() if nonces is not None else None
    jkt = None
    try:
        if proofs:
            jkt = await _verified_proof_jkt(
                services,
                client,
                proofs,
                method="POST",
                urls=(settings.token_endpoint, settings.mtls_endpoint_aliases()["token_endpoint"]),
            )
        elif client.dpop_bound_access_tokens:
            raise InvalidDPoPProof("this client must send a DPoP proof with every token request")
    except OAuthError as exc:
        if nonce is not None:
            exc.headers.setdefault("DPoP-Nonce", nonce)
        raise
    x5t = None
    if client.tls_client_certificate_bound_access_tokens:
        if certificate is None:
            raise InvalidRequest(
                "this client's access tokens are bound to its TLS client certificate; "
                "send the request over mutual TLS"
            )
        x5t = certificate.x5t_s256
    check_token_request(client, constrained=jkt is not None or x5t is not None)
    return TokenBinding(dpop_jkt=jkt, x5t_s256=x5t, nonce=nonce)


def challenge(scheme: str, error: str | None, description: str | None = None) -> str:
    """A ``WWW-Authenticate`` value (RFC 6750 §3, RFC 9449 §7.1)."""
    params = []
    if error is not None:
        params.append(f'error="{error}"')
    if description:
        params.append(f'error_description="{clean_description(description)}"')
    if scheme == "DPoP":
        params.append(f'algs="{" ".join(DPOP_ALGS)}"')
    return scheme + (" " + ", ".join(params) if params else "")


def refused_token(scheme: str, description: str) -> InvalidToken:
    return InvalidToken(
        description, headers={"WWW-Authenticate": challenge(scheme, "invalid_token", description)}
    )


def _at_resource(exc: OAuthError, nonce: str | None) -> OAuthError:
    """A proof error as a resource answers it: 401 with a DPoP challenge (RFC 9449 §7.1, §9)."""
    refused: OAuthError
    if isinstance(exc, UseDPoPNonce):
        refused = UseDPoPNonce(exc.description, nonce=exc.nonce)
    else:
        refused = InvalidDPoPProof(exc.description)
    refused.status = 401
    refused.headers["WWW-Authenticate"] = challenge("DPoP", refused.error, exc.description)
    if nonce is not None:
        refused.headers.setdefault("DPoP-Nonce", nonce)
    return refused


async def check_token_presentation(
    services: Services,
    client: Client,
    record: AccessTokenRecord,
    *,
    scheme: str,
    token: str,
    proofs: Sequence[str],
    method: str,
    urls: Sequence[str],
    certificate: ClientCertificate | None,
) -> dict[str, Any]:
    """Check that the presenter holds what the token is bound to; the headers to add.

    ``scheme`` is ``Bearer`` or ``DPoP``, as the token was sent.
    """
    headers: dict[str, str] = {}
    if record.dpop_jkt is not None:
        if scheme != "DPoP":
            raise refused_token("DPoP", "this access token is DPoP-bound; send it as DPoP")
        nonces = nonces_for(services, client)
        nonce = nonces.current() if nonces is not None else None
        try:
            jkt = await _verified_proof_jkt(
                services, client, proofs, method=method, urls=urls, access_token=token
            )
            if jkt != record.dpop_jkt:
                raise InvalidDPoPProof("the DPoP proof is signed by another key than the token's")
        except (InvalidDPoPProof, UseDPoPNonce) as exc:
            raise _at_resource(exc, nonce) from None
        if nonce is not None:
            headers["DPoP-Nonce"] = nonce
    elif scheme == "DPoP":
        raise refused_token("DPoP", "this access token is not DPoP-bound")
    if record.x5t_s256 is not None and (
        certificate is None or certificate.x5t_s256 != record.x5t_s256
    ):
        raise refused_token(scheme, "this access token is bound to another TLS client certificate")
    return headers
