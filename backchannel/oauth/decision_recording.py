"""Recording the user's decision on a backchannel request: the one way a request
leaves ``pending`` by the user's hand.

Exactly one decision wins under concurrent calls (a conditional UPDATE); the
audit row and the cross-replica wake-up of held polls commit with it. A request
that needs user verification (docs/policy.md, require-uv) is approved only by a
caller that verified the user: nobody approves it in the user's place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import asyncpg

from backchannel.db.assurance import record_authentication_methods, select_user_verification
from backchannel.db.audit import insert_audit_event
from backchannel.db.auth_requests import Decision, decide_auth_request, select_auth_request_status
from backchannel.db.client_notifications import queue_notification
from backchannel.db.listener import DECISION_CHANNEL, notify
from backchannel.db.push_outbox import withdraw_request_prompts
from backchannel.errors import RequestNotPending, UserVerificationRequired
from backchannel.oauth.central_revocation import revoke_client
from backchannel.observability.metrics import Metrics
from backchannel.policy.fatigue import NOT_ME, NotMeLimits, record_not_me

DecisionValue = Literal["approved", "denied"]


async def record_decision(
    conn: asyncpg.Connection,
    id_hash: bytes,
    decision: DecisionValue,
    *,
    device_id: str | None = None,
    reason: str | None = None,
    detail: dict[str, Any] | None = None,
    not_me_limits: NotMeLimits | None = None,
    metrics: Metrics | None = None,
    amr: Sequence[str] | None = None,
    user_verified: bool = False,
) -> Decision:
    """Approve or deny the pending request whose auth_req_id hashes to ``id_hash``.

    Raises :class:`RequestNotPending` (with ``state`` decided/expired/unknown) if
    the request cannot take a decision any more. A denial with reason ``not_me``
    also mutes the user and may suspend the client (docs/policy.md), under
    ``not_me_limits`` (default: the settings' defaults). ``metrics``, when
    given, records the time the user took to decide. ``amr`` (RFC 8176) records
    how an approval was made; approving a request that requires user verification
    without ``user_verified`` raises :class:`UserVerificationRequired`.
    """
    if decision not in ("approved", "denied"):
        raise ValueError(f"unknown decision {decision!r}")
    if decision == "denied" and reason is None:
        reason = "user"
    if (
        decision == "approved"
        and not user_verified
        and await select_user_verification(conn, id_hash) == "required"
    ):
        raise UserVerificationRequired(
            "approving this request needs the user's fingerprint, face or PIN on their device"
        )
    async with conn.transaction():
        decided = await decide_auth_request(
            conn, id_hash, decision, device_id=device_id, reason=reason
        )
        if decided is None:
            state = await select_auth_request_status(conn, id_hash)
            raise RequestNotPending("unknown" if state is None else _describe(state))
        if amr and decided.status == "approved":
            await record_authentication_methods(conn, decided.id, amr)
        await insert_audit_event(
            conn,
            "auth_request_decided",
            client_id=decided.client_id,
            user_id=decided.user_id,
            auth_request_id=decided.id,
            device_id=device_id,
            detail={"decision": decision, "reason": reason, **(detail or {})},
        )
        await notify(conn, DECISION_CHANNEL, id_hash.hex())
        if decided.delivery_mode != "poll":  # ping and push clients hear of it (CIBA §10)
            await queue_notification(
                conn, decided.id, decision, denial_reason=decided.denial_reason
            )
        # The user's other phones drop the prompt at once (docs/device-api.md, dismiss).
        await withdraw_request_prompts(conn, decided.id, except_device=device_id)
        if reason == NOT_ME and await record_not_me(
            conn, decided, not_me_limits or NotMeLimits.defaults()
        ):
            await revoke_client(conn, decided.client_id, actor="not_me_suspension")
    if metrics is not None and decided.created_at and decided.decided_at:
        metrics.record_decision(decided.status, decided.created_at, decided.decided_at)
    return decided


def _describe(state: str) -> str:
    return {
        "approved": "already approved",
        "denied": "already denied",
        "redeemed": "already used",
    }.get(state, state)
