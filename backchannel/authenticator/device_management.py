"""A device's life after enrolment: its push subscription and its removal.

Removing a device withdraws its prompts in the same transaction: unsent
prompts are dropped, and for every pending request whose prompt may have
reached the phone a ``dismiss`` is queued in ``push_outbox`` (under the
prompt's topic, ``push_topic(ref)``), so the phone closes the notification.
It also revokes what the device's approvals granted (``revoke_device_grants``):
the tokens issued from requests it approved, and its approved requests not yet
redeemed. The user's pending requests stay pending for their other devices.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

import asyncpg
from cryptography.hazmat.primitives.asymmetric import ec

from backchannel.authenticator.webauthn_registration import b64url
from backchannel.db.audit import insert_audit_event
from backchannel.db.central_revocation import RevocationSummary
from backchannel.db.devices import (
    Device,
    Subscription,
    mark_device_removed,
    select_active_vapid_key,
    select_device,
    update_subscription,
    withdraw_device_prompts,
)
from backchannel.db.pool import Queryable
from backchannel.db.push_outbox import DISMISS_GRACE_SECONDS
from backchannel.db.webauthn import WebAuthnCredential, delete_credential
from backchannel.delivery.webpush import check_push_endpoint
from backchannel.errors import InvalidRequest, InvalidToken
from backchannel.oauth.central_revocation import revoke_device_grants
from backchannel.settings import Settings
from backchannel.url_guard import UnsafeURL

_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")
# Uncompressed P-256 point (RFC 8291 §3.1) and the 16-byte auth secret (§3.2).
_P256DH_BYTES = 65
_AUTH_BYTES = 16


def parse_subscription(value: object, settings: Settings) -> Subscription:
    """A browser's ``PushSubscription.toJSON()``, checked; ``invalid_request`` otherwise.

    The endpoint must name a push service the operator allows
    (``BACKCHANNEL_PUSH_ALLOWED_HOSTS``): one the server would refuse to send to
    is refused here, where the app can tell the user, not later in silence.
    """
    if not isinstance(value, dict):
        raise InvalidRequest("subscription must be a PushSubscription object")
    endpoint, keys = value.get("endpoint"), value.get("keys")
    if not isinstance(endpoint, str) or not isinstance(keys, dict):
        raise InvalidRequest("subscription needs endpoint and keys")
    try:
        check_push_endpoint(endpoint, settings)
    except UnsafeURL as exc:
        raise InvalidRequest(
            f"this browser's push service is not allowed by the server ({exc}); "
            "try another browser, or ask the operator to allow it"
        ) from None
    p256dh = _base64url(keys.get("p256dh"), "p256dh", _P256DH_BYTES)
    _base64url(keys.get("auth"), "auth", _AUTH_BYTES)
    try:
        if not p256dh.startswith(b"\x04"):
            raise ValueError("compressed")
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), p256dh)
    except ValueError:
        raise InvalidRequest(
            "subscription key p256dh must be an uncompressed P-256 point"
        ) from None
    return Subscription(endpoint, keys["p256dh"].rstrip("="), keys["auth"].rstrip("="))


def _base64url(value: object, name: str, size: int) -> bytes:
    if not isinstance(value, str) or len(value) > 2 * size or not _BASE64URL.fullmatch(value):
        raise InvalidRequest(f"subscription key {name} must be base64url")
    try:
        raw = base64.urlsafe_b64decode(value.rstrip("=") + "=" * (-len(value.rstrip("=")) % 4))
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"subscription key {name} must be base64url") from None
    if len(raw) != size:
        raise InvalidRequest(f"subscription key {name} must be {size} bytes")
    return raw


async def refresh_subscription(conn: Queryable, device: Device, subscription: Subscription) -> None:
    """Replace the device's push subscription (made with the active VAPID key)."""
    vapid = await select_active_vapid_key(conn)
    if not await update_subscription(
        conn, device.device_id, subscription, vapid[0] if vapid else None
    ):
        raise InvalidToken("unknown or removed device")


async def remove_device(
    conn: asyncpg.Connection, device_id: str, *, detail: dict[str, Any] | None = None
) -> Device | None:
    """Remove an active device, withdraw its prompts and revoke its grants; ``None`` if
    not active.

    Later calls signed by the device are refused. Audited as ``device_removed``.
    """
    removal = await remove_device_revoking(conn, device_id, detail=detail)
    return removal.device if removal is not None else None


@dataclass(frozen=True)
class DeviceRemoval:
    device: Device
    revocation: RevocationSummary


async def remove_device_revoking(
    conn: asyncpg.Connection, device_id: str, *, detail: dict[str, Any] | None = None
) -> DeviceRemoval | None:
    """``remove_device`` with what the cascade revoked."""
    async with conn.transaction():
        device = await mark_device_removed(conn, device_id)
        if device is None:
            return None
        dismissed = await withdraw_device_prompts(
            conn, device_id, dismiss_grace=DISMISS_GRACE_SECONDS
        )
        await insert_audit_event(
            conn,
            "device_removed",
            user_id=device.user_id,
            device_id=device_id,
            detail={"name": device.name, "dismissed": dismissed, **(detail or {})},
        )
        actor = str((detail or {}).get("by", "device_removed"))
        revocation = await revoke_device_grants(conn, device, actor=actor)
    return DeviceRemoval(device, revocation)


async def revoke_device(
    conn: asyncpg.Connection, device_id: str, *, actor: str
) -> RevocationSummary | None:
    """Remove the device (if still active) and revoke what its approvals granted;
    ``None`` if there is no such device.

    The user's pending requests stay pending: their other devices may still
    answer them, and the removed device's prompts are withdrawn.
    """
    async with conn.transaction():
        removal = await remove_device_revoking(conn, device_id, detail={"by": actor})
        if removal is not None:
            return removal.revocation
        device = await select_device(conn, device_id)
        if device is None:
            return None
        # Already removed: revoke its grants anyway (idempotent; counts what was left).
        return await revoke_device_grants(conn, device, actor=actor)


async def remove_credential(
    conn: asyncpg.Connection, credential_id: bytes, *, actor: str
) -> WebAuthnCredential | None:
    """Remove one WebAuthn key from its device (lost, or registered by mistake), audited.

    The device stays enrolled; requests that need the fingerprint, face or PIN check
    can no longer be approved on it until another key is registered. Receipts already
    issued keep the public key they were checked with, so they stay verifiable.
    """
    async with conn.transaction():
        credential = await delete_credential(conn, credential_id)
        if credential is None:
            return None
        await insert_audit_event(
            conn,
            "webauthn_credential_removed",
            user_id=credential.user_id,
            device_id=credential.device_id,
            detail={"credential_id": b64url(credential.credential_id), "by": actor},
        )
    return credential
