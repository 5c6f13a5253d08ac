"""Approval receipts: verifiable evidence of what a user's device approved (docs/audit.md).

A receipt is stored in the decision's transaction (:func:`store_receipt`): what
the device showed, which device, the decision and the device's own signature
over it (the decision JWS, docs/device-api.md). The relying party that made
the request fetches it as a JWS signed by the server (``typ``
``bc-receipt+jwt``, ES256) that embeds the device JWS and the device's public
key; :func:`verify_receipt` checks both signatures and that they agree. An
approval with user verification adds the WebAuthn assertion and the credential's
public key (``user_verification``), which :func:`check_user_verification`
checks offline: the fingerprint, face or PIN check was made on the user's own
authenticator, for this server, for exactly this transaction.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from cryptography.exceptions import InvalidSignature
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, KeySet
from webauthn.helpers import (
    decode_credential_public_key,
    decoded_public_key_to_cryptography,
    parse_authenticator_data,
    verify_signature,
)
from webauthn.helpers.exceptions import WebAuthnException

from backchannel.authenticator.device_keys import import_ec_key
from backchannel.authenticator.messages import shown_digest_of, uv_challenge
from backchannel.db.audit import insert_audit_event
from backchannel.db.audit_chain import (
    ReceiptSubject,
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
    "check_user_verification",
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
    user_verification: Mapping[str, Any] | None = None,
    issuer: str | None = None,
    ref: str | None = None,
    client_id: str | None = None,
) -> None:
    """Store the receipt of a device decision; call it in the decision's transaction.

    ``decision`` is what the device signed (approve, deny, not_me); ``shown``
    is ``{"client_name", "binding_message", "scope": [...]}`` as the device was
    shown them; ``device_jws`` the decision JWS as received. The JWS must verify
    with ``device_public_jwk`` and be about this request, decision and ``shown``
    (else ``ValueError``, and nothing is stored). ``user_verification``, for an
    approval with user verification, must check out too (under ``issuer``'s RP ID
    and origin). An ``approval_receipt_stored`` audit row binds the receipt into
    the audit chain.

    A caller that knows the request's ``ref`` and ``client_id`` passes them: the
    receipt is then checked first and stored by one statement that only stores it
    for that request, with no savepoint; otherwise it is stored, then checked
    against the request found, and rolled back if it does not fit.
    """
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(DECISIONS)}")
    shown_value = _shown(shown)
    public_jwk = _public_device_jwk(device_public_jwk)
    key = _device_key(public_jwk)
    # The audit row binds the receipt into the chain; it is written with the receipt.
    audit_detail = {
        "decision": decision,
        "device_jws_sha256": _b64(hashlib.sha256(device_jws.encode("ascii")).digest()),
        "jkt": key.thumbprint(),
        "user_verified": user_verification is not None,
    }

    def check(ref: str, client_id: str) -> None:
        try:
            payload = check_device_decision(
                device_jws,
                key,
                device_id=device_id,
                ref=ref,
                decision=decision,
                digest=shown_digest_of(ref, shown_value),
            )
            if user_verification is not None:
                if issuer is None:
                    raise ValueError("a receipt with user verification needs the issuer")
                check_user_verification(
                    user_verification,
                    issuer=issuer,
                    ref=ref,
                    client_id=client_id,
                    shown=shown_value,
                    decision=decision,
                    device_payload=payload,
                )
        except InvalidReceipt as exc:
            raise ValueError(f"the device decision does not fit the receipt: {exc}") from None

    async def insert(ref: str | None, client_id: str | None) -> ReceiptSubject | None:
        return await insert_approval_receipt(
            conn,
            auth_request_id=auth_request_id,
            device_id=device_id,
            decision=decision,
            shown=shown_value,
            device_jws=device_jws,
            device_public_jwk=public_jwk,
            user_verification=user_verification,
            audit_detail=audit_detail,
            id_hash=bytes.fromhex(ref) if ref is not None else None,
            client_id=client_id,
        )

    if ref is not None and client_id is not None:
        check(ref, client_id)
        if await insert(ref, client_id) is None:
            raise ValueError(f"no auth request {auth_request_id} with ref {ref}")
        return
    async with conn.transaction():  # rolled back if the receipt does not fit
        stored = await insert(None, None)
        if stored is None:
            raise ValueError(f"no auth request {auth_request_id}")
        check(stored.id_hash.hex(), stored.client_id)


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
        **(
            {"user_verification": stored.user_verification}
            if stored.user_verification is not None
            else {}
        ),
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
    payload = check_device_decision(
        _string(claims, "device_jws"),
        key,
        device_id=_string(device, "device_id"),
        ref=ref,
        decision=decision,
        digest=digest,
    )
    uv = claims.get("user_verification")
    if uv is not None:
        check_user_verification(
            uv,
            issuer=_string(claims, "iss"),
            ref=ref,
            client_id=_string(claims, "client_id"),
            shown=_shown(shown),
            decision=decision,
            device_payload=payload,
        )
    elif payload.get("webauthn") is not None:
        raise InvalidReceipt("the device approved with user verification the receipt leaves out")
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


def check_user_verification(
    uv: object,
    *,
    issuer: str,
    ref: str,
    client_id: str,
    shown: Mapping[str, Any],
    decision: str,
    device_payload: Mapping[str, Any],
) -> None:
    """Check a receipt's ``user_verification`` member offline (docs/audit.md).

    The assertion must be the one the device signed into its decision; its
    ``clientDataJSON`` a ``webauthn.get`` at the issuer's origin whose challenge
    is the transaction's (recomputed from ``ref``, ``client_id``, what was shown
    and the nonce the device signed); its ``authenticatorData`` for the issuer's
    host with the user present and verified; its signature valid under the
    credential public key.
    """
    if decision != "approve":
        raise InvalidReceipt("only an approval carries user verification")
    if not isinstance(uv, Mapping):
        raise InvalidReceipt("user_verification is not an object")
    assertion, credential = uv.get("assertion"), uv.get("credential")
    if not isinstance(assertion, Mapping) or not isinstance(credential, Mapping):
        raise InvalidReceipt("user_verification lacks assertion or credential")
    parts = urlsplit(issuer)
    rp_id, origin = parts.hostname or "", f"{parts.scheme}://{parts.netloc}"
    if uv.get("rp_id") != rp_id or uv.get("origin") != origin:
        raise InvalidReceipt("the user verification names another relying party or origin")
    nonce = _string(uv, "nonce")
    if device_payload.get("challenge") != nonce:
        raise InvalidReceipt("the user verification nonce is not the one the device signed")
    signed = device_payload.get("webauthn")
    signed_response = signed.get("response") if isinstance(signed, Mapping) else None
    credential_id = _string(credential, "id")
    if (
        not isinstance(signed, Mapping)
        or not isinstance(signed_response, Mapping)
        or signed.get("rawId") != credential_id
        or any(
            signed_response.get(theirs) != assertion.get(ours)
            for theirs, ours in (
                ("authenticatorData", "authenticator_data"),
                ("clientDataJSON", "client_data_json"),
                ("signature", "signature"),
            )
        )
    ):
        raise InvalidReceipt("the assertion is not the one the device signed into its decision")
    details = uv.get("authorization_details")
    if details is not None and not isinstance(details, list):
        raise InvalidReceipt("authorization_details must be a list or null")
    expected = uv_challenge(
        ref=ref,
        client_id=client_id,
        client_name=shown["client_name"],
        binding_message=shown["binding_message"],
        scope=shown["scope"],
        authorization_details=details,
        nonce=nonce,
    )
    client_data_raw = _b64decode(_string(assertion, "client_data_json"), "client_data_json")
    authenticator_data = _b64decode(_string(assertion, "authenticator_data"), "authenticator_data")
    client_data = _json_object(client_data_raw, "clientDataJSON")
    if client_data.get("type") != "webauthn.get":
        raise InvalidReceipt("clientDataJSON is not of an assertion")
    if client_data.get("challenge") != _b64(expected):
        raise InvalidReceipt("the assertion was made for another transaction (challenge)")
    if client_data.get("origin") != origin or client_data.get("crossOrigin") is True:
        raise InvalidReceipt("the assertion was made on another origin")
    try:
        data = parse_authenticator_data(authenticator_data)
    except (WebAuthnException, ValueError, IndexError) as exc:
        raise InvalidReceipt(f"authenticator_data is malformed ({exc})") from None
    if data.rp_id_hash != hashlib.sha256(rp_id.encode("utf-8")).digest():
        raise InvalidReceipt("the assertion was made for another RP ID")
    if not (data.flags.up and data.flags.uv):
        raise InvalidReceipt("the authenticator did not verify the user (UV flag)")
    public_key = _b64decode(_string(credential, "public_key"), "public_key")
    signature = _b64decode(_string(assertion, "signature"), "signature")
    try:
        decoded = decode_credential_public_key(public_key)
        verify_signature(
            public_key=decoded_public_key_to_cryptography(decoded),
            signature_alg=decoded.alg,
            signature=signature,
            data=authenticator_data + hashlib.sha256(client_data_raw).digest(),
        )
    except (
        WebAuthnException,
        InvalidSignature,
        ValueError,
        TypeError,
        KeyError,
        RecursionError,
    ) as exc:
        raise InvalidReceipt(f"the assertion signature does not verify ({exc!r})") from None


# --- shared ----------------------------------------------------------------------------------


def _shown(shown: Mapping[str, Any]) -> dict[str, Any]:
    """``{"client_name", "binding_message", "scope"}`` and, when the request had them,
    ``authorization_details``; checked."""
    name, message, scope = (shown.get(k) for k in ("client_name", "binding_message", "scope"))
    if not isinstance(name, str):
        raise ValueError("shown.client_name must be a string")
    if message is not None and not isinstance(message, str):
        raise ValueError("shown.binding_message must be a string or null")
    if not isinstance(scope, Sequence) or isinstance(scope, str):
        raise ValueError("shown.scope must be a list of strings")
    if not all(isinstance(s, str) for s in scope):
        raise ValueError("shown.scope must be a list of strings")
    checked: dict[str, Any] = {
        "client_name": name,
        "binding_message": message,
        "scope": list(scope),
    }
    details = shown.get("authorization_details")
    if details is not None:
        if not isinstance(details, list) or not all(isinstance(d, Mapping) for d in details):
            raise ValueError("shown.authorization_details must be a list of objects")
        checked["authorization_details"] = details
    return checked


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
        return import_ec_key(public_jwk)
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


def _b64decode(value: str, name: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise InvalidReceipt(f"{name} is not base64url") from None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
