"""Registering a WebAuthn credential on a device (docs/device-api.md, "User verification").

Two device-signed calls: ``/device/webauthn/register-options`` returns the
options for ``navigator.credentials.create()`` with a fresh challenge, stored
as SHA-256, tied to the asking device and valid for a few minutes;
``/device/webauthn/register`` carries the browser's answer, which must spend
that challenge (once: a failed attempt spends it too) and verify with user
verification, at this server's RP ID and origin, under the attestation the
operator requires. The credential is then stored with the device and audited
(``webauthn_credential_registered``); a refusal is audited too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import uuid
from typing import Any

import asyncpg
from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier
from webauthn import generate_registration_options, verify_registration_response
from webauthn.helpers import (
    decode_credential_public_key,
    options_to_json_dict,
    parse_attestation_object,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AttestationFormat,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    CredentialDeviceType,
    PublicKeyCredentialDescriptor,
    PublicKeyCredentialHint,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from backchannel.authenticator.messages import timestamp
from backchannel.authenticator.webauthn_party import (
    SUPPORTED_ALGORITHMS,
    WebAuthnParty,
    webauthn_party,
)
from backchannel.db.audit import insert_audit_event
from backchannel.db.devices import Device
from backchannel.db.users import select_user
from backchannel.db.webauthn import (
    NewCredential,
    WebAuthnCredential,
    insert_credential,
    insert_registration_challenge,
    select_device_credentials,
    select_user_handle,
    spend_registration_challenge,
)
from backchannel.errors import InvalidRequest
from backchannel.oauth.services import Services
from backchannel.untrusted_json import UntrustedJSON, parse_untrusted_json

REGISTRATION_TTL = 300  # seconds a registration challenge stays usable
CHALLENGE_BYTES = 32
USER_HANDLE_BYTES = 32
MAX_CREDENTIALS_PER_DEVICE = 10
_TRANSPORTS = frozenset(t.value for t in AuthenticatorTransport)
# id-fido-gen-ce-aaguid: the AAGUID an attestation certificate is issued for.
FIDO_AAGUID_OID = ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(value: object, what: str) -> bytes:
    if not isinstance(value, str) or len(value) > 65536:
        raise InvalidRequest(f"{what} must be base64url")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{what} must be base64url") from None


def require_party(services: Services) -> WebAuthnParty:
    party = webauthn_party(services.settings)
    if party is None:
        raise InvalidRequest(
            "this server cannot use fingerprint, face or PIN checks: its address is an IP "
            "address, which browsers do not accept for them",
            status_code=409,
        )
    return party


async def webauthn_state(services: Services, device: Device) -> dict[str, Any] | None:
    """What the app needs to ask for user verification: the RP ID and this device's
    credentials (for ``allowCredentials``); None where the server cannot use WebAuthn."""
    party = webauthn_party(services.settings)
    if party is None:
        return None
    credentials = await select_device_credentials(services.pool, device.device_id)
    return {
        "rp_id": party.rp_id,
        "credentials": [
            {
                "id": b64url(c.credential_id),
                "transports": list(c.transports),
                "created_at": timestamp(c.created_at),
                "last_used_at": timestamp(c.last_used_at) if c.last_used_at else None,
            }
            for c in credentials
        ],
    }


async def registration_options(services: Services, device: Device) -> dict[str, Any]:
    """Options for ``navigator.credentials.create()`` (JSON, base64url for bytes)."""
    party = require_party(services)
    existing = await select_device_credentials(services.pool, device.device_id)
    if len(existing) >= MAX_CREDENTIALS_PER_DEVICE:
        raise InvalidRequest(
            f"this phone has {MAX_CREDENTIALS_PER_DEVICE} fingerprint, face or PIN keys already",
            status_code=409,
        )
    user = await select_user(services.pool, device.user_id)
    if user is None:
        raise InvalidRequest("unknown user", status_code=404)
    handle = await select_user_handle(
        services.pool, user.user_id, secrets.token_bytes(USER_HANDLE_BYTES)
    )
    challenge = secrets.token_bytes(CHALLENGE_BYTES)
    options = generate_registration_options(
        rp_id=party.rp_id,
        rp_name=party.name,
        user_name=user.subject,
        user_id=handle,
        user_display_name=user.display_name or user.subject,
        challenge=challenge,
        timeout=REGISTRATION_TTL * 1000,
        attestation=(
            AttestationConveyancePreference.DIRECT
            if party.direct_attestation
            else AttestationConveyancePreference.NONE
        ),
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.DISCOURAGED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=[
            PublicKeyCredentialDescriptor(
                id=c.credential_id,
                transports=[AuthenticatorTransport(t) for t in _known(c.transports)],
            )
            for c in existing
        ],
        supported_pub_key_algs=list(SUPPORTED_ALGORITHMS),
        # A preference for the phone's own (platform) authenticator, not a requirement.
        hints=[PublicKeyCredentialHint.CLIENT_DEVICE],
    )
    await insert_registration_challenge(
        services.pool, hashlib.sha256(challenge).digest(), device.device_id, REGISTRATION_TTL
    )
    return options_to_json_dict(options)


async def register_credential(
    services: Services, conn: asyncpg.Connection, device: Device, response: object
) -> WebAuthnCredential:
    """Verify the browser's ``navigator.credentials.create()`` answer and store the
    credential; ``invalid_request`` (audited) if it does not verify."""
    party = require_party(services)
    try:
        return await _register(services, conn, party, device, response)
    except InvalidRequest as exc:
        await insert_audit_event(
            conn,
            "webauthn_registration_refused",
            user_id=device.user_id,
            device_id=device.device_id,
            detail={"error": exc.description},
        )
        raise


async def _register(
    services: Services,
    conn: asyncpg.Connection,
    party: WebAuthnParty,
    device: Device,
    response: object,
) -> WebAuthnCredential:
    if not isinstance(response, dict) or not isinstance(response.get("response"), dict):
        raise InvalidRequest("credential must be the PublicKeyCredential as JSON")
    client_data = _client_data(response["response"].get("clientDataJSON"))
    challenge = b64url_decode(client_data.get("challenge"), "the challenge")
    if not await spend_registration_challenge(
        conn, hashlib.sha256(challenge).digest(), device.device_id
    ):
        raise InvalidRequest("the registration challenge is unknown, used or expired")
    roots = party.roots_by_format() if party.direct_attestation else None
    try:
        verified = verify_registration_response(
            credential=response,
            expected_challenge=challenge,
            expected_rp_id=party.rp_id,
            expected_origin=party.origin,
            require_user_presence=True,
            require_user_verification=True,
            supported_pub_key_algs=list(SUPPORTED_ALGORITHMS),
            pem_root_certs_bytes_by_fmt=roots,
        )
    except (WebAuthnException, ValueError, TypeError, KeyError, RecursionError) as exc:
        raise InvalidRequest(f"the credential does not verify: {exc}") from None
    aaguid = uuid.UUID(verified.aaguid)
    attested = False
    if party.direct_attestation:
        fmt = AttestationFormat(verified.fmt)
        attested = _check_attestation(fmt, verified.attestation_object, aaguid)
    if party.allowed_aaguids and aaguid not in party.allowed_aaguids:
        raise InvalidRequest(f"this kind of authenticator ({aaguid}) is not allowed here")
    alg = int(decode_credential_public_key(verified.credential_public_key).alg)
    transports = response["response"].get("transports")
    new = NewCredential(
        credential_id=verified.credential_id,
        device_id=device.device_id,
        user_id=device.user_id,
        public_key=verified.credential_public_key,
        alg=alg,
        sign_count=verified.sign_count,
        aaguid=aaguid,
        transports=_known(transports if isinstance(transports, list) else []),
        attestation_format=AttestationFormat(verified.fmt).value,
        attested=attested,
        backup_eligible=(
            CredentialDeviceType(verified.credential_device_type)
            == CredentialDeviceType.MULTI_DEVICE
        ),
        backed_up=verified.credential_backed_up,
    )
    async with conn.transaction():
        try:
            stored = await insert_credential(conn, new)
        except asyncpg.UniqueViolationError:
            raise InvalidRequest("this credential is registered already") from None
        await insert_audit_event(
            conn,
            "webauthn_credential_registered",
            user_id=device.user_id,
            device_id=device.device_id,
            detail={
                "credential_id": b64url(stored.credential_id),
                "public_key_sha256": b64url(hashlib.sha256(stored.public_key).digest()),
                "alg": stored.alg,
                "aaguid": str(stored.aaguid),
                "attestation_format": stored.attestation_format,
                "attested": stored.attested,
                "backup_eligible": stored.backup_eligible,
                "transports": list(stored.transports),
            },
        )
    return stored


def _client_data(value: object) -> dict[str, Any]:
    raw = b64url_decode(value, "clientDataJSON")
    try:
        data = parse_untrusted_json(raw)
    except UntrustedJSON:
        raise InvalidRequest("clientDataJSON is not acceptable JSON") from None
    if not isinstance(data, dict):
        raise InvalidRequest("clientDataJSON is not a JSON object")
    return data


def _check_attestation(fmt: AttestationFormat, attestation: bytes, aaguid: uuid.UUID) -> bool:
    """Under direct attestation: a statement with a certificate chain (verified against
    the operator's roots by py_webauthn), never ``none`` or self attestation; and the
    AAGUID the certificate vouches for, when it names one, is the credential's."""
    if fmt == AttestationFormat.NONE:
        raise InvalidRequest("this server requires an attested authenticator")
    statement = parse_attestation_object(attestation).att_stmt
    if not statement.x5c:
        raise InvalidRequest("this server requires an attested authenticator (no self attestation)")
    try:
        leaf = x509.load_der_x509_certificate(statement.x5c[0])
        extension = leaf.extensions.get_extension_for_oid(FIDO_AAGUID_OID).value
    except x509.ExtensionNotFound:
        return True
    except ValueError:
        raise InvalidRequest("the attestation certificate cannot be read") from None
    raw = extension.value if isinstance(extension, x509.UnrecognizedExtension) else b""
    if raw != b"\x04\x10" + aaguid.bytes:
        raise InvalidRequest("the attestation certificate vouches for another AAGUID")
    return True


def _known(transports: object) -> tuple[str, ...]:
    if not isinstance(transports, list | tuple):
        return ()
    return tuple(t for t in transports if isinstance(t, str) and t in _TRANSPORTS)[:8]
