"""Approval receipts: verifiable evidence of what a user's device approved (docs/audit.md).

A receipt is stored in the decision's transaction (:func:`store_receipt`): what
the device showed, which device, the decision and the device's own signature
over it (the decision JWS, docs/device-api.md). The relying party that made
the request fetches it as a JWS signed by the server (``typ``
``bc-receipt+jwt``, ES256) that embeds the device JWS and the device's public
key; :func:`verify_receipt` checks both signatures and that they agree.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, KeySet

from backchannel.authenticator.messages import shown_digest_of
from backchannel.db.audit import insert_audit_event
from backchannel.db.audit_chain import (
    StoredReceipt,
    insert_approval_receipt,
    select_receipt_for_client,
)
from backchannel.db.clients import Client
from backchannel.errors import InvalidGrant
from backchannel.oauth.secrets import hash_secret
from backchannel.oauth.services import Services
from backchannel.untrusted_json import UntrustedJSON, parse_untrusted_json

__all__ = [
    "DECISIONS",
    "RECEIPT_TYP",
    "InvalidReceipt",
    "issue_receipt",
    "receipt_claims",
    "sign_receipt",
    "store_receipt",
    "verify_receipt",
]

RECEIPT_TYP = "bc-receipt+jwt"
ALG = "ES256"
# The decision as the device signs it (docs/device-api.md, POST /device/decision).
DECISIONS = ("approve", "deny", "not_me")
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class InvalidReceipt(ValueError):
    """A receipt (or the device decision in it) does not verify; ``str`` says why."""


# --- storing ---------------------------------------------------------------------------------


async def store_receipt(
    conn: asyncpg.Connection,
    *,
    auth_request_id: int,
    device_id: str,
    decision: str,
    shown: Mapping[str, Any],
    device_jws: str,
    device_public_jwk: Mapping[str, Any],
) -> None:
    """Store the receipt of a device decision; call it in the decision's transaction.

    ``decision`` is what the device signed (approve, deny, not_me); ``shown``
    is ``{"client_name", "binding_message", "scope": [...]}`` as the device was
    shown them; ``device_jws`` the decision JWS as received. The JWS must verify
    with ``device_public_jwk`` and be about this request, decision and ``shown``
    (else ``ValueError``, and nothing is stored). An ``approval_receipt_stored``
    audit row binds the receipt into the audit chain.
    """
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(DECISIONS)}")
    shown_value = _shown(shown)
    public_jwk = _public_device_jwk(device_public_jwk)
    key = _device_key(public_jwk)
    async with conn.transaction():
        stored = await insert_approval_receipt(
            conn,
            auth_request_id=auth_request_id,
            device_id=device_id,
            decision=decision,
            shown=shown_value,
            device_jws=device_jws,
            device_public_jwk=public_jwk,
        )
        if stored is None:
            raise ValueError(f"no auth request {auth_request_id}")
        ref = stored.id_hash.hex()
        try:
            check_device_decision(
                device_jws,
                key,
                device_id=device_id,
                ref=ref,
                decision=decision,
                digest=shown_digest_of(ref, shown_value),
            )
        except InvalidReceipt as exc:
            raise ValueError(f"the device decision does not fit the receipt: {exc}") from None
        await insert_audit_event(
            conn,
            "approval_receipt_stored",
            client_id=stored.client_id,
            user_id=stored.user_id,
            auth_request_id=auth_request_id,
            device_id=device_id,
            detail={
                "decision": decision,
                "device_jws_sha256": _b64(hashlib.sha256(device_jws.encode("ascii")).digest()),
                "jkt": key.thumbprint(),
            },
        )


# --- issuing ---------------------------------------------------------------------------------


async def issue_receipt(services: Services, client: Client, auth_req_id: str) -> str:
    """The signed receipt of ``auth_req_id``, only for the client that made the request.

    Another client's request, an unknown one and one without a device decision
    get the same ``invalid_grant`` (404), so nothing can be probed.
    """
    stored = await select_receipt_for_client(
        services.pool, hash_secret(auth_req_id), client.client_id
    )
    if stored is None:
        raise InvalidGrant("no approval receipt for this auth_req_id", status_code=404)
    key = services.keys.signing_key(ALG)
    token = sign_receipt(receipt_claims(stored, issuer=services.settings.issuer), key)
    await insert_audit_event(
        services.pool,
        "approval_receipt_issued",
        client_id=client.client_id,
        auth_request_id=stored.auth_request_id,
        device_id=stored.device_id,
        detail={"kid": key.kid},
    )
    return token


def receipt_claims(
    stored: StoredReceipt, *, issuer: str, now: float | None = None
) -> dict[str, Any]:
    """The payload of a receipt."""
    ref = stored.id_hash.hex()
    return {
        "iss": issuer,
        "aud": stored.client_id,
        "iat": int(time.time() if now is None else now),
        "sub": stored.subject,
        "client_id": stored.client_id,
        "ref": ref,
        "shown": {**stored.shown, "digest": shown_digest_of(ref, stored.shown)},
        "device": {
            "device_id": stored.device_id,
            "name": stored.device_name,
            "jwk": stored.device_public_jwk,
            "jkt": _device_key(stored.device_public_jwk).thumbprint(),
        },
        "decision": stored.decision,
        "decided_at": int(stored.decided_at.timestamp()),
        "device_jws": stored.device_jws,
    }


def sign_receipt(claims: Mapping[str, Any], key: Key) -> str:
    header = {"alg": ALG, "typ": RECEIPT_TYP, "kid": key.kid}
    payload = json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return jws.serialize_compact(header, payload, key, algorithms=[ALG])


# --- verifying -------------------------------------------------------------------------------


def verify_receipt(
    receipt_jwt: str,
    jwks: Mapping[str, Any],
    *,
    issuer: str | None = None,
    auth_req_id: str | None = None,
) -> dict[str, Any]:
    """Verify a receipt with the server's JWKS; its claims, or :class:`InvalidReceipt`.

    Checks the server's ES256 signature and ``typ``, then the embedded device
    decision: its signature with the embedded device key (whose thumbprint the
    server signed), and that it names the same request, decision and ``shown``
    digest, which is recomputed from the shown client name, binding message
    and scope. ``issuer`` and ``auth_req_id``, when given, must match too.
    """
    header = _header(receipt_jwt)
    if header.get("alg") != ALG or header.get("typ") != RECEIPT_TYP:
        raise InvalidReceipt(f"not a {RECEIPT_TYP} signed with {ALG}")
    try:
        keys = KeySet.import_key_set(dict(jwks))  # type: ignore[arg-type]
        signed = jws.deserialize_compact(receipt_jwt, keys, algorithms=[ALG])
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise InvalidReceipt(f"the server signature does not verify ({exc})") from None
    claims = _json_object(signed.payload, "receipt")
    ref, decision = _string(claims, "ref"), _string(claims, "decision")
    if issuer is not None and claims.get("iss") != issuer:
        raise InvalidReceipt("the receipt is from another issuer")
    if auth_req_id is not None and not hmac.compare_digest(
        ref, hashlib.sha256(auth_req_id.encode("utf-8")).hexdigest()
    ):
        raise InvalidReceipt("the receipt is about another auth_req_id")
    shown, device = claims.get("shown"), claims.get("device")
    if not isinstance(shown, dict) or not isinstance(device, dict):
        raise InvalidReceipt("the receipt lacks shown or device")
    try:
        digest = shown_digest_of(ref, _shown(shown))
        key = _device_key(_public_device_jwk(device.get("jwk")))
    except ValueError as exc:
        raise InvalidReceipt(str(exc)) from None
    if shown.get("digest") != digest:
        raise InvalidReceipt("shown.digest is not the digest of what was shown")
    if device.get("jkt") != key.thumbprint():
        raise InvalidReceipt("device.jkt is not the thumbprint of device.jwk")
    check_device_decision(
        _string(claims, "device_jws"),
        key,
        device_id=_string(device, "device_id"),
        ref=ref,
        decision=decision,
        digest=digest,
    )
    return claims


def check_device_decision(
    device_jws: str, key: ECKey, *, device_id: str, ref: str, decision: str, digest: str
) -> dict[str, Any]:
    """Verify a device's decision JWS and that it is about ``ref``/``decision``/``digest``."""
    header = _header(device_jws)
    if header.get("alg") != ALG:
        raise InvalidReceipt(f"the device decision is not signed with {ALG}")
    if "kid" in header and header["kid"] != device_id:
        raise InvalidReceipt("the device decision names another device")
    try:
        signed = jws.deserialize_compact(device_jws, key, algorithms=[ALG])
    except (JoseError, ValueError, TypeError) as exc:
        raise InvalidReceipt(f"the device signature does not verify ({exc})") from None
    payload = _json_object(signed.payload, "device decision")
    for name, expected in (("ref", ref), ("decision", decision), ("shown", digest)):
        if payload.get(name) != expected:
            raise InvalidReceipt(f"the device signed another {name}")
    return payload


# --- shared ----------------------------------------------------------------------------------


def _shown(shown: Mapping[str, Any]) -> dict[str, Any]:
    """``{"client_name", "binding_message", "scope"}``, checked."""
    name, message, scope = (shown.get(k) for k in ("client_name", "binding_message", "scope"))
    if not isinstance(name, str):
        raise ValueError("shown.client_name must be a string")
    if message is not None and not isinstance(message, str):
        raise ValueError("shown.binding_message must be a string or null")
    if not isinstance(scope, Sequence) or isinstance(scope, str):
        raise ValueError("shown.scope must be a list of strings")
    if not all(isinstance(s, str) for s in scope):
        raise ValueError("shown.scope must be a list of strings")
    return {"client_name": name, "binding_message": message, "scope": list(scope)}


def _public_device_jwk(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ValueError("the device key must be a JWK")
    if _PRIVATE_MEMBERS & value.keys():
        raise ValueError("the device key must be a public key")
    if value.get("kty") != "EC" or value.get("crv") != "P-256":
        raise ValueError("the device key must be an EC P-256 key")
    x, y = value.get("x"), value.get("y")
    if not isinstance(x, str) or not isinstance(y, str):
        raise ValueError("the device key lacks x or y")
    return {"kty": "EC", "crv": "P-256", "x": x, "y": y}


def _device_key(public_jwk: Mapping[str, Any]) -> ECKey:
    try:
        return ECKey.import_key(dict(public_jwk))
    except (JoseError, ValueError, TypeError) as exc:
        raise ValueError(f"the device key is not a valid P-256 key ({exc})") from None


def _header(token: str) -> dict[str, Any]:
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 3:
        raise InvalidReceipt("not a compact JWS")
    try:
        raw = base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4))
    except ValueError:
        raise InvalidReceipt("the JWS header is not base64url") from None
    return _json_object(raw, "JWS header")


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = parse_untrusted_json(raw)
    except UntrustedJSON as exc:
        raise InvalidReceipt(f"the {what} is not acceptable JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidReceipt(f"the {what} is not a JSON object")
    return value


def _string(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidReceipt(f"{name} is missing")
    return value


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
