"""The user's decision, signed on their device (docs/device-api.md, ``POST /device/decision``).

A decision counts only if it was made over exactly what the request shows: the
device signs the request's ``challenge`` and the ``shown`` digest of its
client name, binding message and scope, with a short ``exp``. An approval of a
request that needs user verification also carries a WebAuthn assertion bound
to the transaction (``user_verification``). Then it takes the one decision
path, :func:`record_decision`, with the device and how it approved (``amr``)
recorded. Deny and "This wasn't me" never need user verification.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from backchannel.authenticator.device_auth import DeviceCall
from backchannel.authenticator.messages import ref_id_hash, shown_digest
from backchannel.authenticator.receipts import store_receipt
from backchannel.authenticator.user_verification import (
    DEVICE_KEY_AMR,
    VerifiedAssertion,
    verify_approval_assertion,
)
from backchannel.db.audit import insert_audit_event
from backchannel.db.devices import (
    DecisionTarget,
    PastDecision,
    PendingRequest,
    assign_missing_challenges,
    select_decision_target,
    select_pending_requests,
)
from backchannel.errors import (
    AccessDenied,
    InvalidRequest,
    InvalidToken,
    RequestNotPending,
    UserVerificationRequired,
)
from backchannel.oauth.decision_recording import DecisionValue, record_decision
from backchannel.oauth.secrets import new_secret
from backchannel.observability.metrics import Metrics
from backchannel.policy.fatigue import NotMeLimits
from backchannel.settings import Settings

# exp may lie at most this long after iat.
MAX_DECISION_LIFETIME = 120
HISTORY_LIMIT = 20
_MAX_FIELD = 256


@dataclass(frozen=True)
class _Outcome:
    status: DecisionValue
    reason: str | None
    detail: dict[str, Any]


_OUTCOMES = {
    "approve": _Outcome("approved", None, {"via": "device"}),
    "deny": _Outcome("denied", "user", {"via": "device"}),
    "not_me": _Outcome("denied", "not_me", {"via": "device", "reported": True}),
}
_STATES = {"approved": "already approved", "denied": "already denied", "redeemed": "already used"}


@dataclass(frozen=True)
class DeviceDecision:
    ref: str
    status: str


def parse_ref(value: object) -> bytes:
    """The request id hash a ``ref`` (64 lower-case hex digits) names."""
    id_hash = ref_id_hash(value)
    if id_hash is None:
        raise InvalidRequest("ref must be 64 lower-case hex digits")
    return id_hash


async def decide_on_device(
    conn: asyncpg.Connection,
    call: DeviceCall,
    settings: Settings,
    *,
    metrics: Metrics | None = None,
) -> DeviceDecision:
    """Check a decision call's payload against the request, then record it.

    400 malformed or not over what the request shows, 401 expired, 403 another
    user's request, 404 unknown, 409 no longer pending.
    """
    payload = call.payload
    ref = payload.get("ref")
    id_hash = parse_ref(ref)
    assert isinstance(ref, str)
    decision = payload.get("decision")
    outcome = _OUTCOMES.get(decision) if isinstance(decision, str) else None
    if outcome is None:
        raise InvalidRequest("decision must be approve, deny or not_me")
    assert isinstance(decision, str)
    shown, challenge = payload.get("shown"), payload.get("challenge")
    if not _short_string(shown) or not _short_string(challenge):
        raise InvalidRequest("shown and challenge are required")
    assert isinstance(shown, str) and isinstance(challenge, str)
    _check_expiry(payload, settings.device_clock_skew)

    # Read with the call's jti (verify_device_call with names_request); else now.
    target = call.target if call.target_read else await select_decision_target(conn, id_hash)
    if target is None:
        raise InvalidRequest("unknown request", status_code=404)
    if target.user_id != call.device.user_id:
        raise AccessDenied("the request is not for this device's user")
    if target.state != "pending":
        raise RequestNotPending(_STATES.get(target.state, target.state))
    if target.challenge is None or not _same(challenge, target.challenge):
        raise InvalidRequest("the challenge does not match the request")
    expected = shown_digest(
        ref,
        target.client_name,
        target.binding_message,
        target.scope,
        target.authorization_details,
    )
    if not _same(shown, expected):
        raise InvalidRequest("the decision was made over something the request does not show")
    verified: VerifiedAssertion | None = None
    if outcome.status == "approved":
        verified = await _user_verification(conn, call, settings, target, ref, metrics)
    if outcome.status == "approved" and target.number_match is not None:
        number = payload.get("number")
        if not isinstance(number, str) or not number:
            raise InvalidRequest("this request needs the number the relying party shows")
        if not _same(number, target.number_match):
            # A wrong pick is a denial: the user approved something they could not match.
            async with conn.transaction():
                decided = await record_decision(
                    conn,
                    id_hash,
                    "denied",
                    device_id=call.device.device_id,
                    reason="number_mismatch",
                    detail={"via": "device"},
                    metrics=metrics,
                )
                await insert_audit_event(
                    conn,
                    "number_match_failed",
                    client_id=decided.client_id,
                    user_id=decided.user_id,
                    auth_request_id=decided.id,
                    device_id=call.device.device_id,
                )
            return DeviceDecision(ref, decided.status)
    detail = dict(outcome.detail)
    would_require = verified is None and target.user_verification == "would_require"
    if verified is not None:
        detail["user_verification"] = {
            "verified": True,
            "credential_id": verified.receipt_member()["credential"]["id"],
        }
    elif would_require and outcome.status == "approved":
        # Report-only require-uv rules: this approval would have needed it.
        detail["user_verification"] = {"verified": False, "would_require": True}
    async with conn.transaction():
        decided = await record_decision(
            conn,
            id_hash,
            outcome.status,
            device_id=call.device.device_id,
            reason=outcome.reason,
            detail=detail,
            not_me_limits=NotMeLimits.from_settings(settings),
            metrics=metrics,
            amr=verified.amr if verified is not None else DEVICE_KEY_AMR,
            user_verified=verified is not None,
        )
        # The approval receipt: what was shown, to which device, and its signature.
        await store_receipt(
            conn,
            auth_request_id=decided.id,
            device_id=call.device.device_id,
            decision=decision,
            shown={
                "client_name": target.client_name,
                "binding_message": target.binding_message,
                "scope": list(target.scope),
                **(
                    {"authorization_details": list(target.authorization_details)}
                    if target.authorization_details is not None
                    else {}
                ),
            },
            device_jws=call.token,
            device_public_jwk=call.device.public_jwk,
            user_verification=verified.receipt_member() if verified is not None else None,
            issuer=settings.issuer,
            ref=ref,
            client_id=target.client_id,
        )
    if metrics is not None and would_require and decided.status == "approved":
        metrics.record_user_verification("would_require")
    return DeviceDecision(ref, decided.status)


async def _user_verification(
    conn: asyncpg.Connection,
    call: DeviceCall,
    settings: Settings,
    target: DecisionTarget,
    ref: str,
    metrics: Metrics | None,
) -> VerifiedAssertion | None:
    """The approval's verified assertion; None when it carries none and needs none."""
    assertion = call.payload.get("webauthn")
    if assertion is None:
        if target.user_verification != "required":
            return None
        await insert_audit_event(
            conn,
            "user_verification_failed",
            client_id=target.client_id,
            user_id=call.device.user_id,
            auth_request_id=target.id,
            device_id=call.device.device_id,
            detail={"reason": "missing", "error": "the approval carries no assertion"},
        )
        if metrics is not None:
            metrics.record_user_verification("missing")
        raise UserVerificationRequired(
            "approving this request needs your fingerprint, face or PIN on this phone"
        )
    return await verify_approval_assertion(
        conn,
        settings,
        device=call.device,
        target=target,
        ref=ref,
        assertion=assertion,
        metrics=metrics,
    )


def _short_string(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_FIELD


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _check_expiry(payload: dict[str, Any], skew: float) -> None:
    iat, exp = payload.get("iat"), payload.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float) or exp != exp:
        raise InvalidRequest("exp must be a number")
    assert isinstance(iat, int | float)  # checked by device_auth
    if not 0 < exp - iat <= MAX_DECISION_LIFETIME:
        raise InvalidRequest(f"exp must be within {MAX_DECISION_LIFETIME} seconds after iat")
    if time.time() > exp + skew:
        raise InvalidToken("the decision has expired (exp)")


async def pending_requests(conn: asyncpg.Connection, user_id: int) -> list[PendingRequest]:
    """The user's pending, unexpired requests; each gets a challenge if it has none yet.

    The prompt writer normally sets the challenge; a request that has none
    (no device was prompted) gets one here, first writer wins.
    """
    requests = await select_pending_requests(conn, user_id)
    missing = {r.id: new_secret(16) for r in requests if r.challenge is None}
    if not missing:
        return requests
    await assign_missing_challenges(conn, missing)
    return await select_pending_requests(conn, user_id)


def decision_label(past: PastDecision) -> str:
    """What the device decided, in the vocabulary it posts: approve, deny or not_me."""
    if past.status in ("approved", "redeemed"):
        return "approve"
    return "not_me" if past.denial_reason == "not_me" else "deny"
