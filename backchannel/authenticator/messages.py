"""What the authenticator app is sent and signs over (docs/device-api.md), in one place.

- ``ref``: the name a device knows a request by, the hex SHA-256 of its auth_req_id;
- the Web Push ``Topic`` of a request's messages (RFC 8030 §5.4): a later
  message with the same topic replaces an undelivered one, so a ``dismiss``
  overtakes the ``prompt`` it withdraws;
- the ``prompt`` and ``dismiss`` payloads, and a pending request as
  ``GET /device/requests`` lists it (the prompt's fields plus its age);
- the ``shown`` digest a device signs its decision over:
  ``base64url(SHA-256(UTF-8(JSON.stringify([ref, client_name, binding_message, scope]))))``
  with ``binding_message`` ``""`` when absent and ``scope`` space-joined, and a
  fifth element, the canonical JSON text of the ``authorization_details``, when
  the request has them. The browser's ``JSON.stringify`` and ``json.dumps(...,
  ensure_ascii=False, separators=(",", ":"))`` agree on these strings;
- the WebAuthn challenge of an approval with user verification
  (:func:`uv_challenge`): SHA-256 over the canonical JSON of
  ``["backchannel-uv/1", "approve", ref, client_id, client_name, binding_message,
  scope, authorization_details, nonce]``, so the fingerprint, face or PIN check
  is bound to exactly this transaction (PSD2 dynamic linking).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

TOPIC_LENGTH = 32
# The largest integer a JavaScript number holds exactly.
MAX_EXACT_INTEGER = 2**53 - 1
# Bytes of prompt JSON a push may carry with its authorization details.
PUSH_PAYLOAD_BUDGET = 3500
# Domain separation and version of the user-verification challenge input: a later
# layout gets a new version, never a silent reinterpretation.
UV_DOMAIN = "backchannel-uv/1"
UV_REQUIRED = "required"
UV_NONE = "none"
_REF = re.compile(r"[0-9a-f]{64}")


def request_ref(id_hash: bytes) -> str:
    """The ``ref`` a device knows a request by: the hex SHA-256 of its auth_req_id."""
    return id_hash.hex()


def ref_id_hash(value: object) -> bytes | None:
    """The request id hash a ``ref`` (64 lower-case hex digits) names; None if it is none."""
    if not isinstance(value, str) or not _REF.fullmatch(value):
        return None
    return bytes.fromhex(value)


def push_topic(ref: str) -> str:
    """The first 32 characters of base64url(SHA-256(UTF-8(ref)))."""
    digest = hashlib.sha256(ref.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:TOPIC_LENGTH]


def timestamp(moment: datetime) -> str:
    """UTC, whole seconds, ``Z``: every time the device API sends."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def prompt_fields(
    *,
    ref: str,
    client_name: str,
    binding_message: str | None,
    scope: Sequence[str],
    expires_at: datetime,
    challenge: str | None,
    number_choices: Sequence[str] | None,
    client_id: str,
    user_verification_required: bool,
    authorization_details: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """What a device is told about a pending request, in a prompt and in the pending list.

    ``authorization_details`` (RFC 9396), when the request has them, are shown as
    a card and covered by the ``shown`` digest and the WebAuthn challenge.

    ``user_verification`` is ``"required"`` when approving needs the user's
    fingerprint, face or PIN (a WebAuthn assertion over :func:`uv_challenge`),
    else ``"none"``; a report-only rule's opinion is never shown to the device.
    """
    fields: dict[str, Any] = {
        "ref": ref,
        "client_id": client_id,
        "client_name": client_name,
        "binding_message": binding_message,
        "scope": list(scope),
        "expires_at": timestamp(expires_at),
        "challenge": challenge,
        "user_verification": UV_REQUIRED if user_verification_required else UV_NONE,
    }
    if number_choices:
        fields["number_choices"] = list(number_choices)
    if authorization_details is not None:
        fields["authorization_details"] = list(authorization_details)
    return fields


def prompt_payload(**fields: Any) -> dict[str, Any]:
    """The ``prompt`` push message (takes :func:`prompt_fields`' arguments).

    A push carries at most 4096 encrypted bytes (RFC 8030 §7.2), about 3990 of
    JSON. Authorization details that would not fit in :data:`PUSH_PAYLOAD_BUDGET`
    are left out and ``authorization_details_omitted`` is set: the app reads them
    from the pending list before it shows the request, and the notification then
    offers no Deny button (a decision covers what was shown, which it has not got).
    """
    payload = {"type": "prompt", **prompt_fields(**fields)}
    if "authorization_details" in payload and _encoded_size(payload) > PUSH_PAYLOAD_BUDGET:
        del payload["authorization_details"]
        payload["authorization_details_omitted"] = True
    return payload


def _encoded_size(payload: Mapping[str, Any]) -> int:
    return len(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def dismiss_payload(ref: str) -> dict[str, Any]:
    """The ``dismiss`` push message: close the prompt of ``ref``, it was answered or ended."""
    return {"type": "dismiss", "ref": ref}


def shown_digest(
    ref: str,
    client_name: str,
    binding_message: str | None,
    scope: Sequence[str],
    authorization_details: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """The digest a device signs over in its decision. A request with authorization
    details (RFC 9396) adds them as a fifth element, their canonical JSON text."""
    shown: list[str] = [ref, client_name, binding_message or "", " ".join(scope)]
    if authorization_details is not None:
        shown.append(canonical_json(list(authorization_details)))
    text = json.dumps(shown, ensure_ascii=False, separators=(",", ":"))
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def shown_digest_of(ref: str, shown: Mapping[str, Any]) -> str:
    """:func:`shown_digest` of a receipt's ``shown`` member."""
    return shown_digest(
        ref,
        shown["client_name"],
        shown["binding_message"],
        shown["scope"],
        shown.get("authorization_details"),
    )


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace, non-ASCII unescaped: RFC 8785 for the
    strings, integers, booleans, nulls, arrays and objects the device API carries.

    Keys sort by their UTF-16 code units, as the browser's ``sort()`` does (it
    differs from code-point order only for keys mixing astral characters with
    U+E000..U+FFFF). Floats are refused: their shortest forms differ between
    Python and JavaScript (``1.0``/``1``, ``1e-05``/``0.00001``), so what the
    device API carries has integers only (within ±2^53, exact in both).
    """
    if isinstance(value, dict):
        members = sorted(value.items(), key=lambda member: member[0].encode("utf-16-be"))
        return "{" + ",".join(f"{_json_string(k)}:{canonical_json(v)}" for k, v in members) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(canonical_json(item) for item in value) + "]"
    if isinstance(value, float):
        raise TypeError("canonical JSON carries no floats")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_EXACT_INTEGER:
        raise TypeError("canonical JSON carries integers within ±2^53 only")
    return json.dumps(value, ensure_ascii=False)


def _json_string(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError("canonical JSON object keys are strings")
    return json.dumps(key, ensure_ascii=False)


def uv_challenge_input(
    *,
    ref: str,
    client_id: str,
    client_name: str,
    binding_message: str | None,
    scope: Sequence[str],
    authorization_details: Sequence[Mapping[str, Any]] | None,
    nonce: str,
) -> list[Any]:
    """What an approval's user verification is bound to, in order.

    ``authorization_details`` (RFC 9396, once requests carry them) go in as the
    JSON array the device displays, ``null`` until then; ``nonce`` is the
    request's per-request ``challenge``.
    """
    return [
        UV_DOMAIN,
        "approve",
        ref,
        client_id,
        client_name,
        binding_message or "",
        " ".join(scope),
        list(authorization_details) if authorization_details is not None else None,
        nonce,
    ]


def uv_challenge(**fields: Any) -> bytes:
    """The WebAuthn challenge of an approval: SHA-256 of the canonical JSON of
    :func:`uv_challenge_input` (takes its arguments)."""
    return hashlib.sha256(canonical_json(uv_challenge_input(**fields)).encode("utf-8")).digest()
