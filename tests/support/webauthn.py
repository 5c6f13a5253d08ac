"""A software WebAuthn authenticator and client for server-side ceremony tests.

It makes what a browser and a platform authenticator would: a P-256 credential
with its COSE_Key, ``authenticatorData`` (RP ID hash, flags, sign counter,
attested credential data), ``clientDataJSON``, an attestation object (``none``,
or ``packed`` with a certificate chain to a test CA), and assertions signed over
``authenticatorData || SHA-256(clientDataJSON)``, all written here from the
WebAuthn specification rather than with the server's library, so that the
server's checks meet independent bytes. Every knob a test needs to break one
check is a keyword: origin, RP ID, UV flag, counter, challenge.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import secrets
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

UP, UV, BE, BS, AT = 0x01, 0x04, 0x08, 0x10, 0x40
FIDO_AAGUID_OID = ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def canonical_json(value: Any) -> str:
    """RFC 8785 for strings, integers and nulls (as the app's JavaScript writes it)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def uv_challenge(
    entry: dict[str, Any], *, authorization_details: Any = None, nonce: str | None = None
) -> bytes:
    """The approval challenge of docs/device-api.md, from a pending-list entry, computed
    independently of the server's code."""
    text = canonical_json(
        [
            "backchannel-uv/1",
            "approve",
            entry["ref"],
            entry["client_id"],
            entry["client_name"],
            entry["binding_message"] or "",
            " ".join(entry["scope"]),
            authorization_details,
            entry["challenge"] if nonce is None else nonce,
        ]
    )
    return hashlib.sha256(text.encode("utf-8")).digest()


@dataclass
class TestCA:
    """A certificate authority for ``packed`` attestation statements."""

    __test__ = False

    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    name: str = "Test Attestation Root"

    def __post_init__(self) -> None:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def attestation_certificate(
        self, key: ec.EllipticCurvePrivateKey, aaguid: uuid.UUID | None
    ) -> x509.Certificate:
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.COUNTRY_NAME, "GB"),
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Authenticators"),
                        x509.NameAttribute(
                            NameOID.ORGANIZATIONAL_UNIT_NAME, "Authenticator Attestation"
                        ),
                        x509.NameAttribute(NameOID.COMMON_NAME, "Test Batch 1"),
                    ]
                )
            )
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if aaguid is not None:
            value = b"\x04\x10" + aaguid.bytes  # an OCTET STRING of the 16 bytes
            builder = builder.add_extension(
                x509.UnrecognizedExtension(FIDO_AAGUID_OID, value), critical=False
            )
        return builder.sign(self.key, hashes.SHA256())


@dataclass
class SoftAuthenticator:
    """One credential on a software authenticator, and the browser around it."""

    rp_id: str = "localhost"
    origin: str = "http://localhost:8000"
    aaguid: uuid.UUID = field(default_factory=uuid.uuid4)
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    credential_id: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    sign_count: int = 0
    backup_eligible: bool = False

    def cose_public_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return cbor2.dumps(
            {
                1: 2,  # kty: EC2
                3: -7,  # alg: ES256
                -1: 1,  # crv: P-256
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )

    def authenticator_data(
        self,
        *,
        rp_id: str | None = None,
        up: bool = True,
        uv: bool = True,
        count: int | None = None,
        attested: bool = False,
    ) -> bytes:
        flags = (UP if up else 0) | (UV if uv else 0) | (BE if self.backup_eligible else 0)
        if attested:
            flags |= AT
        data = hashlib.sha256((rp_id or self.rp_id).encode()).digest()
        data += bytes([flags]) + struct.pack(">I", self.sign_count if count is None else count)
        if attested:
            data += self.aaguid.bytes + struct.pack(">H", len(self.credential_id))
            data += self.credential_id + self.cose_public_key()
        return data

    def client_data(
        self, kind: str, challenge: bytes, *, origin: str | None = None, **extra: Any
    ) -> bytes:
        return json.dumps(
            {
                "type": kind,
                "challenge": b64url(challenge),
                "origin": origin or self.origin,
                "crossOrigin": False,
                **extra,
            }
        ).encode()

    def create(
        self,
        options: dict[str, Any],
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        uv: bool = True,
        attestation: str = "none",
        ca: TestCA | None = None,
        certified_aaguid: uuid.UUID | None = None,
        transports: tuple[str, ...] = ("internal", "hybrid"),
    ) -> dict[str, Any]:
        """``navigator.credentials.create()``'s answer as ``PublicKeyCredential.toJSON()``."""
        challenge = b64url_decode(options["challenge"])
        client_data = self.client_data("webauthn.create", challenge, origin=origin)
        auth_data = self.authenticator_data(rp_id=rp_id, uv=uv, attested=True)
        statement: dict[str, Any] = {}
        if attestation == "packed":
            assert ca is not None
            batch_key = ec.generate_private_key(ec.SECP256R1())
            certificate = ca.attestation_certificate(batch_key, certified_aaguid or self.aaguid)
            signed = auth_data + hashlib.sha256(client_data).digest()
            statement = {
                "alg": -7,
                "sig": batch_key.sign(signed, ec.ECDSA(hashes.SHA256())),
                "x5c": [certificate.public_bytes(serialization.Encoding.DER)],
            }
        elif attestation == "self":
            signed = auth_data + hashlib.sha256(client_data).digest()
            statement = {"alg": -7, "sig": self.key.sign(signed, ec.ECDSA(hashes.SHA256()))}
        fmt = "none" if attestation == "none" else "packed"
        attestation_object = cbor2.dumps({"fmt": fmt, "attStmt": statement, "authData": auth_data})
        return {
            "id": b64url(self.credential_id),
            "rawId": b64url(self.credential_id),
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation_object),
                "transports": list(transports),
            },
        }

    def get(
        self,
        challenge: bytes,
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        uv: bool = True,
        count: int | None = None,
        user_handle: bytes | None = None,
    ) -> dict[str, Any]:
        """``navigator.credentials.get()``'s answer as ``PublicKeyCredential.toJSON()``;
        the counter moves forward unless ``count`` says otherwise."""
        if count is None:
            self.sign_count += 1
            count = self.sign_count
        client_data = self.client_data("webauthn.get", challenge, origin=origin)
        auth_data = self.authenticator_data(rp_id=rp_id, uv=uv, count=count)
        signature = self.key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        return {
            "id": b64url(self.credential_id),
            "rawId": b64url(self.credential_id),
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": b64url(user_handle) if user_handle is not None else None,
            },
        }
