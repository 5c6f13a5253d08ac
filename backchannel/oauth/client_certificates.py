"""Client TLS certificates (RFC 8705): what a certificate says, and whether it is trusted.

The certificate reaches the server from the TLS connection or from a trusted
proxy (``endpoints/client_certificate.py``); here it is only parsed, matched
against a client's registration and checked against the trust anchors of
``BACKCHANNEL_TLS_CLIENT_CA_FILE``.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)
from joserfc.jwk import KeySet

MAX_PEM_LENGTH = 16384
# The subject values a tls_client_auth client may register, one of them (RFC 8705 §2.1.2).
SUBJECT_KINDS: tuple[str, ...] = ("subject_dn", "san_dns", "san_uri", "san_ip", "san_email")


class CertificateRejected(ValueError):
    """The certificate cannot be read, or does not authenticate the client."""


@dataclass(frozen=True)
class ClientCertificate:
    """One X.509 certificate as the client presented it."""

    der: bytes

    @classmethod
    def from_pem(cls, pem: str) -> ClientCertificate:
        if len(pem) > MAX_PEM_LENGTH:
            raise CertificateRejected("the client certificate is too long")
        try:
            certificate = x509.load_pem_x509_certificate(pem.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raise CertificateRejected("the client certificate is not a PEM certificate") from None
        return cls(certificate.public_bytes(Encoding.DER))

    @cached_property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)

    @property
    def x5t_s256(self) -> str:
        """``x5t#S256``: base64url SHA-256 of the DER certificate (RFC 8705 §3.1)."""
        digest = hashlib.sha256(self.der).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    @property
    def subject_dn(self) -> str:
        return self.certificate.subject.rfc4514_string()

    def public_key_der(self) -> bytes:
        return self.certificate.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )

    def _san(self) -> x509.SubjectAlternativeName | None:
        try:
            extension = self.certificate.extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            )
        except (x509.ExtensionNotFound, ValueError):
            return None
        return extension.value

    def san_values(self, kind: type[x509.GeneralName]) -> list[Any]:
        san = self._san()
        return [] if san is None else list(san.get_values_for_type(kind))  # type: ignore[arg-type]


@dataclass(frozen=True)
class RegisteredSubject:
    """The one certificate subject value a ``tls_client_auth`` client registered
    (RFC 8705 §2.1.2): ``kind`` is ``subject_dn``, ``san_dns``, ``san_uri``,
    ``san_ip`` or ``san_email``."""

    kind: str
    value: str


def subject_matches(certificate: ClientCertificate, expected: RegisteredSubject) -> bool:
    """Whether the certificate carries the registered subject value."""
    value = expected.value
    if expected.kind == "subject_dn":
        try:
            return x509.Name.from_rfc4514_string(value) == certificate.certificate.subject
        except ValueError:
            return False
    if expected.kind == "san_dns":
        wanted = value.rstrip(".").lower()
        return any(
            name.rstrip(".").lower() == wanted for name in certificate.san_values(x509.DNSName)
        )
    if expected.kind == "san_uri":
        return value in certificate.san_values(x509.UniformResourceIdentifier)
    if expected.kind == "san_ip":
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            return False
        return address in certificate.san_values(x509.IPAddress)
    if expected.kind == "san_email":
        return value.lower() in (e.lower() for e in certificate.san_values(x509.RFC822Name))
    return False


def check_subject_value(kind: str, value: str) -> str | None:
    """Why ``value`` cannot be registered as a ``kind`` subject; None if it can."""
    if not value.strip():
        return "must not be empty"
    if kind == "subject_dn":
        try:
            x509.Name.from_rfc4514_string(value)
        except ValueError as exc:
            return f"not an RFC 4514 distinguished name: {exc}"
    if kind == "san_ip":
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return "not an IP address"
    return None


class ClientCertificateAuthorities:
    """The trust anchors of ``tls_client_auth`` (PKI-issued client certificates)."""

    def __init__(self, anchors: list[x509.Certificate]) -> None:
        if not anchors:
            raise ValueError("no certificates")
        self._store = Store(anchors)

    @classmethod
    def from_file(cls, path: str | Path) -> ClientCertificateAuthorities:
        try:
            anchors = x509.load_pem_x509_certificates(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read CA certificates: {exc}") from None
        return cls(anchors)

    def verify(self, certificate: ClientCertificate, now: datetime | None = None) -> None:
        """Raise :class:`CertificateRejected` unless a trust anchor issued the certificate
        (directly; intermediates belong in the anchor file) for client authentication
        and it is valid now."""
        # The CAs are held to the Web PKI's rules; client certificates, issued by many
        # a bank's own PKI, are not refused for the shape of their extensions (a
        # critical subjectAltName, say), but must allow client authentication.
        verifier = (
            PolicyBuilder()
            .store(self._store)
            .time(now or datetime.now(UTC))
            .extension_policies(
                ca_policy=ExtensionPolicy.webpki_defaults_ca(),
                ee_policy=ExtensionPolicy.permit_all(),
            )
            .build_client_verifier()
        )
        try:
            verifier.verify(certificate.certificate, [])
        except VerificationError as exc:
            raise CertificateRejected(f"the client certificate is not trusted: {exc}") from None
        try:
            usage = certificate.certificate.extensions.get_extension_for_class(
                x509.ExtendedKeyUsage
            ).value
        except x509.ExtensionNotFound:
            return
        if ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
            raise CertificateRejected("the client certificate is not for client authentication")


def key_in_key_set(certificate: ClientCertificate, keys: KeySet) -> bool:
    """Whether the certificate's public key is one of the client's registered keys
    (``self_signed_tls_client_auth``, RFC 8705 §2.2)."""
    presented = certificate.public_key_der()
    for key in keys.keys:
        public = key.public_key
        if not hasattr(public, "public_bytes"):
            continue
        encoded = public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        if encoded == presented:
            return True
    return False
