"""The server as a WebAuthn Relying Party: who it is and what it accepts.

The RP ID is the issuer's host and the origin the issuer's origin: the
authenticator app is served by the server itself, at ``<issuer>/authenticator/``.
An issuer on an IP address has no RP ID (browsers refuse one), so user
verification is unavailable there; use a host name (``localhost`` in development).

Attestation follows ``BACKCHANNEL_WEBAUTHN_ATTESTATION``: ``none`` (default)
accepts any authenticator that verifies the user; ``direct`` asks for an
attestation statement and accepts only one whose certificate chain ends at one
of the operator's roots, from an allowed AAGUID when a list is set.
"""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.structs import AttestationFormat

from backchannel.settings import Settings

# ES256 first: what platform authenticators make; EdDSA and RS256 for security keys
# and Windows Hello.
SUPPORTED_ALGORITHMS = (
    COSEAlgorithmIdentifier.ECDSA_SHA_256,
    COSEAlgorithmIdentifier.EDDSA,
    COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256,
)
_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\s.+?\s-----END CERTIFICATE-----", re.DOTALL
)


@dataclass(frozen=True)
class WebAuthnParty:
    rp_id: str
    origin: str
    name: str
    direct_attestation: bool
    roots: tuple[bytes, ...]  # PEM certificates, one each
    allowed_aaguids: frozenset[uuid.UUID]

    def roots_by_format(self) -> dict[AttestationFormat, list[bytes]]:
        """The operator's roots for every attestation format (py_webauthn's argument)."""
        return {fmt: list(self.roots) for fmt in AttestationFormat}


@functools.cache
def webauthn_party(settings: Settings) -> WebAuthnParty | None:
    """The relying party these settings describe; None when the issuer has no RP ID."""
    rp_id = settings.webauthn_rp_id
    if rp_id is None:
        return None
    roots: tuple[bytes, ...] = ()
    direct = settings.webauthn_attestation == "direct"
    if direct and settings.webauthn_attestation_roots:
        pem = Path(settings.webauthn_attestation_roots).read_bytes()
        roots = tuple(match.group(0) + b"\n" for match in _PEM_CERTIFICATE.finditer(pem))
    return WebAuthnParty(
        rp_id=rp_id,
        origin=settings.issuer_origin,
        name=rp_id,
        direct_attestation=direct,
        roots=roots,
        allowed_aaguids=frozenset(uuid.UUID(a) for a in settings.webauthn_allowed_aaguids),
    )
