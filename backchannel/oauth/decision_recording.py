"""Recording the user's decision on a backchannel request: the one way a request
leaves ``pending`` by the user's hand.

Exactly one decision wins under concurrent calls (a conditional UPDATE); the
audit row and the cross-replica wake-up of held polls commit with it. A request
that needs user verification (docs/policy.md, require-uv) is approved only by a
caller that verified the user: nobody approves it in the user's place.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, Literal

import asyncpg

from backchannel.db.auth_requests import Decision, decide_auth_request, select_decision_obstacle
from backchannel.db.client_notifications import queue_notification
from backchannel.db.listener import DECISION_CHANNEL
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
    # In the caller's transaction if there is one, else in its own. No savepoint: the
    # refusals below are raised before anything is written, and any later failure
    # propagates for the caller to roll its transaction back.
    async with contextlib.nullcontext() if conn.is_in_transaction() else conn.transaction():
        # One statement: the decision, an approval's amr, its audit row and the NOTIFY
        # that wakes held polls on every replica (sent at commit).
        decided = await decide_auth_request(
            conn,
            id_hash,
            decision,
            device_id=device_id,
            reason=reason,
            amr=amr,
            user_verified=user_verified,
            audit_detail={"decision": decision, "reason": reason, **(detail or {})},
            notify_channel=DECISION_CHANNEL,
        )
        if decided is None:
            obstacle = await select_decision_obstacle(conn, id_hash)
            if obstacle is None:
                raise RequestNotPending("unknown")
            state, user_verification = obstacle
            if decision == "approved" and not user_verified and user_verification == "required":
                raise UserVerificationRequired(
                    "approving this request needs the user's fingerprint, face or PIN on their"
                    " device"
                )
            raise RequestNotPending(_describe(state))
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
