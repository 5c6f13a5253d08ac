"""User verification at approval: a WebAuthn assertion bound to the transaction.

When the request needs it (docs/policy.md, require-uv; ``acr_values`` asking for
``urn:backchannel:acr:sca``), Approve carries, inside the device's signed decision,
the assertion of one of the device's WebAuthn credentials whose challenge is
:func:`~backchannel.authenticator.messages.uv_challenge` of the request. The
server recomputes that challenge and checks, before anything is recorded: the
credential is this device's; ``clientDataJSON`` is a ``webauthn.get`` for this
challenge from this origin, not cross-origin; ``authenticatorData`` is for this
RP ID with the user present and verified; the signature verifies with the
stored public key; and the sign counter moved forward. A counter that went
backwards is refused and audited as a possible cloned authenticator
(``webauthn_counter_regressed``); every other refusal is audited as
``user_verification_failed`` with a short reason.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import asyncpg
from webauthn import verify_authentication_response
from webauthn.helpers import parse_authenticator_data
from webauthn.helpers.exceptions import WebAuthnException

from backchannel.authenticator.messages import uv_challenge
from backchannel.authenticator.webauthn_party import WebAuthnParty, webauthn_party
from backchannel.db.audit import insert_audit_event
from backchannel.db.devices import DecisionTarget, Device
from backchannel.db.webauthn import WebAuthnCredential, advance_sign_count, select_credential
from backchannel.errors import UserVerificationFailed
from backchannel.oauth.assurance import (
    AMR_HARDWARE_KEY,
    AMR_MULTI_FACTOR,
    AMR_SOFTWARE_KEY,
    AMR_USER,
)
from backchannel.observability.metrics import Metrics
from backchannel.settings import Settings
from backchannel.untrusted_json import UntrustedJSON, parse_untrusted_json

# The approval signed by the device key alone.
DEVICE_KEY_AMR: tuple[str, ...] = (AMR_SOFTWARE_KEY,)
_MAX_PART = 16384  # base64url characters of one assertion part


@dataclass(frozen=True)
class VerifiedAssertion:
    """An approval's user verification, as checked: what goes in the receipt and amr."""

    credential: WebAuthnCredential
    authenticator_data: str  # base64url, as received
    client_data_json: str
    signature: str
    user_handle: str | None
    sign_count: int
    nonce: str
    rp_id: str
    origin: str
    authorization_details: tuple[dict[str, Any], ...] | None = None

    @property
    def amr(self) -> tuple[str, ...]:
        """RFC 8176 methods: the device key, the user verified on the device (two factors),
        and ``hwk`` when the credential is attested hardware that cannot be synced."""
        methods = [AMR_SOFTWARE_KEY]
        if self.credential.attested and not self.credential.backup_eligible:
            methods.append(AMR_HARDWARE_KEY)
        return (*methods, AMR_USER, AMR_MULTI_FACTOR)

    def receipt_member(self) -> dict[str, Any]:
        """The receipt's ``user_verification`` member (docs/audit.md)."""
        c = self.credential
        return {
            "rp_id": self.rp_id,
            "origin": self.origin,
            "nonce": self.nonce,
            "authorization_details": (
                list(self.authorization_details) if self.authorization_details is not None else None
            ),
            "credential": {
                "id": _b64(c.credential_id),
                "public_key": _b64(c.public_key),
                "alg": c.alg,
                "aaguid": str(c.aaguid),
                "attestation_format": c.attestation_format,
                "attested": c.attested,
                "backup_eligible": c.backup_eligible,
            },
            "assertion": {
                "authenticator_data": self.authenticator_data,
                "client_data_json": self.client_data_json,
                "signature": self.signature,
                "user_handle": self.user_handle,
            },
            "sign_count": self.sign_count,
        }


class AssertionRefused(Exception):
    def __init__(self, reason: str, description: str) -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description


async def verify_approval_assertion(
    conn: asyncpg.Connection,
    settings: Settings,
    *,
    device: Device,
    target: DecisionTarget,
    ref: str,
    assertion: object,
    metrics: Metrics | None = None,
) -> VerifiedAssertion:
    """Check an approval's assertion against the request and the device's credential,
    and advance the credential's counter; :class:`UserVerificationFailed` (audited)
    if anything does not hold."""
    try:
        verified = await _verify(conn, settings, device, target, ref, assertion)
    except AssertionRefused as exc:
        event = "webauthn_counter_regressed" if exc.reason == "counter" else None
        await insert_audit_event(
            conn,
            event or "user_verification_failed",
            client_id=target.client_id,
            user_id=device.user_id,
            auth_request_id=target.id,
            device_id=device.device_id,
            detail={"reason": exc.reason, "error": exc.description},
        )
        if metrics is not None:
            metrics.record_user_verification("clone_suspected" if event else "refused")
        raise UserVerificationFailed(exc.description) from None
    if metrics is not None:
        metrics.record_user_verification("verified")
    return verified


async def _verify(
    conn: asyncpg.Connection,
    settings: Settings,
    device: Device,
    target: DecisionTarget,
    ref: str,
    assertion: object,
) -> VerifiedAssertion:
    party = webauthn_party(settings)
    if party is None:
        raise AssertionRefused("unavailable", "this server cannot check fingerprint, face or PIN")
    if not isinstance(assertion, dict) or not isinstance(assertion.get("response"), dict):
        raise AssertionRefused("malformed", "webauthn must be the PublicKeyCredential as JSON")
    response = assertion["response"]
    parts = {
        name: _part(response.get(name), name)
        for name in ("authenticatorData", "clientDataJSON", "signature")
    }
    user_handle = response.get("userHandle")
    if user_handle is not None and not isinstance(user_handle, str):
        raise AssertionRefused("malformed", "userHandle must be base64url")
    credential_id = _decode(_part(assertion.get("rawId"), "rawId"), "rawId")
    credential = await select_credential(conn, credential_id)
    if credential is None or credential.device_id != device.device_id:
        raise AssertionRefused(
            "unknown_credential", "the fingerprint, face or PIN key is not registered on this phone"
        )
    assert target.challenge is not None  # checked by the caller
    expected = uv_challenge(
        ref=ref,
        client_id=target.client_id,
        client_name=target.client_name,
        binding_message=target.binding_message,
        scope=target.scope,
        authorization_details=target.authorization_details,
        nonce=target.challenge,
    )
    client_data_raw = _decode(parts["clientDataJSON"], "clientDataJSON")
    authenticator_data_raw = _decode(parts["authenticatorData"], "authenticatorData")
    _check_client_data(client_data_raw, expected, party)
    sign_count = _check_authenticator_data(authenticator_data_raw, party)
    try:
        verify_authentication_response(
            credential=assertion,
            expected_challenge=expected,
            expected_rp_id=party.rp_id,
            expected_origin=party.origin,
            credential_public_key=credential.public_key,
            # The counter is checked below, after the signature, so that a regression
            # is told apart (and recorded atomically).
            credential_current_sign_count=0,
            require_user_verification=True,
        )
    except (WebAuthnException, ValueError, TypeError, KeyError, RecursionError) as exc:
        raise AssertionRefused(
            "signature", f"the fingerprint, face or PIN check does not verify ({exc})"
        ) from None
    if not await advance_sign_count(conn, credential.credential_id, sign_count):
        raise AssertionRefused(
            "counter",
            f"the authenticator's counter went back ({sign_count} after "
            f"{credential.sign_count}): it may have been copied",
        )
    return VerifiedAssertion(
        credential=credential,
        authenticator_data=parts["authenticatorData"],
        client_data_json=parts["clientDataJSON"],
        signature=parts["signature"],
        user_handle=user_handle,
        sign_count=sign_count,
        nonce=target.challenge,
        rp_id=party.rp_id,
        origin=party.origin,
        authorization_details=target.authorization_details,
    )


def _check_client_data(raw: bytes, expected: bytes, party: WebAuthnParty) -> None:
    """The reason for a refusal, told apart before the library's full verification."""
    try:
        data = parse_untrusted_json(raw)
    except UntrustedJSON:
        raise AssertionRefused("malformed", "clientDataJSON is not acceptable JSON") from None
    if not isinstance(data, dict) or data.get("type") != "webauthn.get":
        raise AssertionRefused("malformed", "clientDataJSON is not of an assertion")
    challenge = data.get("challenge")
    if not isinstance(challenge, str) or not hmac.compare_digest(challenge, _b64(expected)):
        raise AssertionRefused(
            "challenge", "the fingerprint, face or PIN check was made for another transaction"
        )
    if data.get("origin") != party.origin:
        origin = data.get("origin")
        raise AssertionRefused("origin", f"the check was made on another site ({origin!r})")
    if data.get("crossOrigin") is True:
        raise AssertionRefused("origin", "the check was made inside another site's frame")


def _check_authenticator_data(raw: bytes, party: WebAuthnParty) -> int:
    try:
        data = parse_authenticator_data(raw)
    except (WebAuthnException, ValueError, IndexError) as exc:
        raise AssertionRefused("malformed", f"authenticatorData is malformed ({exc})") from None
    if not hmac.compare_digest(data.rp_id_hash, hashlib.sha256(party.rp_id.encode()).digest()):
        raise AssertionRefused("rp_id", "the check was made for another relying party (RP ID)")
    if not data.flags.up:
        raise AssertionRefused("user_not_present", "the authenticator did not see the user")
    if not data.flags.uv:
        raise AssertionRefused(
            "user_not_verified",
            "the authenticator did not verify the user's fingerprint, face or PIN",
        )
    return int(data.sign_count)


def _part(value: object, name: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_PART:
        raise AssertionRefused("malformed", f"{name} must be base64url")
    return value


def _decode(value: str, name: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise AssertionRefused("malformed", f"{name} must be base64url") from None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
