"""Enrolment: a one-time code makes a phone one of its user's devices (docs/device-api.md).

An operator or an allowed relying party obtains a code for a user; the phone
proves possession of its new key (a self-signed JWS, see ``device_auth``) and
spends the code. Spending the code, storing the device and the audit row are
one transaction, so a code enrols at most one device and a refused enrolment
leaves it unspent.

The push subscription is optional: a browser that cannot subscribe (no
reachable push service, notifications blocked, a private window) still enrols,
and the app fetches its pending requests itself until push is turned on
(``POST /device/subscription``).
"""

from __future__ import annotations

import io
import unicodedata
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import segno

from backchannel.authenticator.device_auth import EnrolmentProof
from backchannel.authenticator.device_management import parse_subscription
from backchannel.db.audit import insert_audit_event
from backchannel.db.devices import NewDevice, insert_device, select_active_vapid_key
from backchannel.db.enrolments import insert_enrolment_code, spend_enrolment_code
from backchannel.errors import InvalidGrant, InvalidRequest
from backchannel.oauth.secrets import hash_secret, new_identifier, new_secret
from backchannel.settings import Settings

ISSUED_BY_CLI = "cli"
ENROL_PATH = "/authenticator/#enrol="
MAX_DEVICE_NAME = 64
MAX_CODE_LENGTH = 128
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Co", "Zl", "Zp"})
# Bidirectional overrides and isolates could make a name read differently.
_BIDI_CONTROLS = frozenset(
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
)


@dataclass(frozen=True)
class EnrolmentCode:
    """A freshly issued code: shown once (as a link and a QR code), stored hashed."""

    code: str
    url: str
    expires_in: int
    expires_at: datetime

    def qr_svg(self) -> str:
        """The link as an inline SVG QR code."""
        return str(segno.make(self.url, error="m").svg_inline(scale=4))

    def qr_terminal(self) -> str:
        """The link as a QR code drawn with block characters for a terminal."""
        out = io.StringIO()
        segno.make(self.url, error="m").terminal(out=out, compact=True)
        return out.getvalue()


@dataclass(frozen=True)
class EnrolledDevice:
    device_id: str
    user_id: int
    display_name: str
    vapid_public_key: str | None
    email: str | None = None
    push: bool = True  # False: enrolled without a push subscription


async def issue_enrolment_code(
    conn: asyncpg.Connection, user_id: int, issued_by: str, ttl: int, *, issuer: str
) -> EnrolmentCode:
    """A new one-time code for ``user_id``, valid ``ttl`` seconds; audited as
    ``enrolment_code_issued``. ``issued_by`` is ``"cli"`` or the asking client_id."""
    code = new_secret()
    async with conn.transaction():
        issued = await insert_enrolment_code(conn, hash_secret(code), user_id, issued_by, ttl)
        await insert_audit_event(
            conn,
            "enrolment_code_issued",
            client_id=None if issued_by == ISSUED_BY_CLI else issued_by,
            user_id=user_id,
            detail={"issued_by": issued_by, "expires_in": ttl},
        )
    return EnrolmentCode(code, issuer + ENROL_PATH + code, issued.expires_in, issued.expires_at)


async def enrol_device(
    conn: asyncpg.Connection, settings: Settings, proof: EnrolmentProof
) -> EnrolledDevice:
    """Spend the code the proof carries and store the device; ``InvalidGrant`` (410) when
    the code is unknown, spent or expired."""
    payload = proof.payload
    code = payload.get("code")
    if not isinstance(code, str) or not code or len(code) > MAX_CODE_LENGTH:
        raise InvalidRequest("code is required")
    name = device_name(payload.get("name"))
    raw_subscription = payload.get("subscription")
    subscription = (
        None if raw_subscription is None else parse_subscription(raw_subscription, settings)
    )
    device_id = new_identifier()
    async with conn.transaction():
        spent = await spend_enrolment_code(conn, hash_secret(code), device_id)
        if spent is None:
            raise InvalidGrant("the enrolment code is invalid, spent or expired", status_code=410)
        vapid = await select_active_vapid_key(conn)
        device = NewDevice(
            device_id, spent.user_id, name, proof.public_jwk, proof.thumbprint, subscription
        )
        try:
            await insert_device(conn, device, vapid[0] if vapid else None)
        except asyncpg.UniqueViolationError:
            raise InvalidRequest("this key is enrolled already") from None
        await insert_audit_event(
            conn,
            "device_enrolled",
            client_id=None if spent.issued_by == ISSUED_BY_CLI else spent.issued_by,
            user_id=spent.user_id,
            device_id=device_id,
            detail={
                "name": name,
                "jwk_thumbprint": proof.thumbprint,
                "push": subscription is not None,
            },
        )
    return EnrolledDevice(
        device_id,
        spent.user_id,
        spent.display_name,
        vapid[1] if vapid else None,
        spent.email,
        push=subscription is not None,
    )


def device_name(value: object) -> str:
    """The name a device shows in lists: 1 to 64 displayable characters."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest("name is required")
    name = value.strip()
    if len(name) > MAX_DEVICE_NAME:
        raise InvalidRequest(f"name is longer than {MAX_DEVICE_NAME} characters")
    if any(ch in _BIDI_CONTROLS or unicodedata.category(ch) in _REFUSED_CATEGORIES for ch in name):
        raise InvalidRequest("name contains a character that cannot be displayed")
    return name
