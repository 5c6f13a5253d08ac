"""Verifying what a phone sends: device-signed calls and self-signed enrolments.

Both are compact JWS, ES256 over a P-256 key (docs/device-api.md). A device
call names its device in ``kid`` and is verified with the key registered at
enrolment; an enrolment carries its new public key in the ``jwk`` header and
is verified with that key (proof of possession). Either payload binds the call
(``htm``, ``htu`` = issuer + path, never the Host header), is fresh (``iat``
within the device clock skew) and single use (``jti``, remembered per device,
or per key for an enrolment).

Malformed input is ``invalid_request`` (400); a proof that does not hold
(signature, unknown or removed device, wrong URL, stale, replayed) is
``invalid_token`` (401).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import ECKey

from backchannel.authenticator.device_keys import import_ec_key
from backchannel.authenticator.messages import ref_id_hash
from backchannel.db.devices import DecisionTarget, Device, record_device_call, select_device
from backchannel.db.jtis import insert_jti
from backchannel.errors import InvalidRequest, InvalidToken
from backchannel.oauth.jwt_claims import JWTRejected, read_header
from backchannel.oauth.services import Services
from backchannel.untrusted_json import UntrustedJSON, parse_untrusted_json

ALG = "ES256"
DEVICE_TYP = "bc-device+jwt"
ENROL_TYP = "bc-enrol+jwt"
DEVICE_CALL_PURPOSE = "device_call"
ENROLMENT_PURPOSE = "device_enrol"
MAX_JTI_LENGTH = 256
MAX_KID_LENGTH = 128
# JWK members that only a private (or symmetric) key has.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


@dataclass(frozen=True)
class DeviceCall:
    """A verified device call: the (active) device and the signed payload."""

    device: Device
    payload: dict[str, Any]
    token: str  # the compact JWS itself, kept as the device's signature
    # A call that names a request (a decision): whether the request its ``ref`` names
    # was read with the call, and that request (None: unknown, or no well-formed ref).
    target_read: bool = False
    target: DecisionTarget | None = None


@dataclass(frozen=True)
class EnrolmentProof:
    """A verified enrolment JWS: the new public key, its RFC 7638 thumbprint, the payload."""

    public_jwk: dict[str, str]
    thumbprint: str
    payload: dict[str, Any]


async def verify_device_call(
    services: Services, token: str, path: str, *, names_request: bool = False
) -> DeviceCall:
    """Verify a device-signed call to ``path``; record its jti and the device's last_seen_at.

    ``names_request``: the same statement reads the request the verified payload's
    ``ref`` names (the call's ``target``).
    """
    header = _header(token, DEVICE_TYP)
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
        raise InvalidRequest("the JWS header must name the device in kid")
    device = await select_device(services.pool, kid)
    if device is None or device.removed:
        raise InvalidToken("unknown or removed device")
    payload = _verified_payload(token, _import_public_key(device.public_jwk))
    iat, jti = _check_binding(services, payload, path)
    recorded = await record_device_call(
        services.pool,
        device.device_id,
        purpose=DEVICE_CALL_PURPOSE,
        jti=jti,
        expires_at=_jti_expiry(services, iat),
        target=ref_id_hash(payload.get("ref")) if names_request else None,
    )
    if not recorded.fresh:
        raise InvalidToken("the JWS was used already (jti)")
    if not recorded.active:
        raise InvalidToken("unknown or removed device")
    return DeviceCall(device, payload, token, names_request, recorded.target)


async def verify_enrolment_proof(services: Services, token: str, path: str) -> EnrolmentProof:
    """Verify a self-signed enrolment JWS to ``path``; record its jti under the key."""
    header = _header(token, ENROL_TYP)
    public_jwk = public_device_jwk(header.get("jwk"))
    key = _import_public_key(public_jwk)
    payload = _verified_payload(token, key)
    iat, jti = _check_binding(services, payload, path)
    thumbprint = key.thumbprint()
    await _spend_jti(services, thumbprint, ENROLMENT_PURPOSE, jti, iat)
    return EnrolmentProof(public_jwk, thumbprint, payload)


def public_device_jwk(value: object) -> dict[str, str]:
    """The canonical public members of a device key: an EC P-256 public JWK, nothing else."""
    if not isinstance(value, dict):
        raise InvalidRequest("the JWS header must carry the device's public key in jwk")
    if _PRIVATE_MEMBERS & value.keys():
        raise InvalidRequest("the jwk must be a public key")
    if value.get("kty") != "EC" or value.get("crv") != "P-256":
        raise InvalidRequest("the jwk must be an EC P-256 key")
    x, y = value.get("x"), value.get("y")
    if not isinstance(x, str) or not isinstance(y, str) or len(x) != 43 or len(y) != 43:
        raise InvalidRequest("the jwk must carry the x and y coordinates")
    public = {"kty": "EC", "crv": "P-256", "x": x, "y": y}
    _import_public_key(public)
    return public


def _import_public_key(public_jwk: dict[str, Any]) -> ECKey:
    try:
        key = import_ec_key(public_jwk)
    except (JoseError, ValueError, TypeError):
        raise InvalidRequest("the jwk is not a valid P-256 public key") from None
    if key.is_private or key.curve_name != "P-256":
        raise InvalidRequest("the jwk must be a P-256 public key")
    return key


def _header(token: str, typ: str) -> dict[str, Any]:
    try:
        header = read_header(token)
    except JWTRejected as exc:
        raise InvalidRequest(f"the body is not a compact JWS: {exc}") from None
    if header["alg"] != ALG:
        raise InvalidRequest(f"the JWS must be signed with {ALG}")
    if header.get("typ") != typ:
        raise InvalidRequest(f"the JWS typ must be {typ}")
    if "crit" in header:
        raise InvalidRequest("critical JWS header parameters are not supported")
    return header


def _verified_payload(token: str, key: ECKey) -> dict[str, Any]:
    try:
        signed = jws.deserialize_compact(token, key, algorithms=[ALG])
    except BadSignatureError:
        raise InvalidToken("the JWS signature is invalid") from None
    except (JoseError, ValueError, TypeError):
        raise InvalidRequest("the body is not a valid compact JWS") from None
    try:
        payload = parse_untrusted_json(signed.payload)
    except UntrustedJSON as exc:
        raise InvalidRequest(f"the JWS payload is not acceptable JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidRequest("the JWS payload is not a JSON object")
    return payload


def _check_binding(services: Services, payload: dict[str, Any], path: str) -> tuple[float, str]:
    """``htm``, ``htu``, ``iat`` and ``jti``; returns (iat, jti)."""
    htm, htu, iat, jti = (payload.get(name) for name in ("htm", "htu", "iat", "jti"))
    if not isinstance(htm, str) or not isinstance(htu, str):
        raise InvalidRequest("htm and htu are required")
    if isinstance(iat, bool) or not isinstance(iat, int | float) or iat != iat:
        raise InvalidRequest("iat must be a number")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
        raise InvalidRequest("jti must be a non-empty string")
    if htm != "POST" or htu != services.settings.issuer + path:
        raise InvalidToken("the JWS was made for another URL")
    if abs(time.time() - iat) > services.settings.device_clock_skew:
        raise InvalidToken("the JWS is stale or from the future (iat)")
    return float(iat), jti


def _jti_expiry(services: Services, iat: float) -> datetime:
    # A call is accepted until iat + skew; remember its jti at least that long.
    return datetime.fromtimestamp(iat + services.settings.device_clock_skew + 1, UTC)


async def _spend_jti(services: Services, issuer: str, purpose: str, jti: str, iat: float) -> None:
    expires = _jti_expiry(services, iat)
    fresh = await insert_jti(
        services.pool, issuer=issuer, purpose=purpose, jti=jti, expires_at=expires
    )
    if not fresh:
        raise InvalidToken("the JWS was used already (jti)")
