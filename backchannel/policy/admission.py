"""Admission at /bc-authorize: policy rules, then push-fatigue limits (docs/policy.md).

Called after the user is resolved and before the request is stored. At most
one database read: the user's prompt state (counts, mute, and groups when a
rule needs them), skipped entirely when no limit is on and no rule looks at
groups. An enforced refusal raises :class:`AccessDenied` after writing its
audit row; the request is never stored, so the user gets no prompt.
"""

from __future__ import annotations

from typing import Any

from backchannel.db.audit import insert_audit_event
from backchannel.db.clients import Client
from backchannel.db.prompt_limits import PromptState, select_prompt_state
from backchannel.db.users import User
from backchannel.errors import AccessDenied
from backchannel.oauth.authentication_request import AuthenticationRequest
from backchannel.policy.evaluate import PolicyDecision, RequestFacts, evaluate, parse_caller_ip
from backchannel.policy.fatigue import FatigueLimits, fatigue_refusal
from backchannel.services import Services

POLICY_DENIED = "the request is not allowed by this server's policy"


async def admit_request(
    services: Services,
    client: Client,
    user: User,
    request: AuthenticationRequest,
    caller_ip: str | None,
) -> dict[str, Any]:
    """Refuse the request, or return what its ``auth_request_issued`` row should add."""
    rules = await services.policy.current()
    limits = FatigueLimits.from_settings(services.settings)
    state: PromptState | None = None
    if limits.active or services.settings.not_me_mute or rules.needs_groups:
        state = await select_prompt_state(
            services.pool,
            user.user_id,
            pending_cap=limits.max_pending,
            recent_cap=limits.max_prompts,
            window=limits.window,
            with_groups=rules.needs_groups,
        )
    ids: dict[str, Any] = {"client_id": client.client_id, "user_id": user.user_id}
    added: dict[str, Any] = {}
    if rules.rules:
        facts = RequestFacts(
            client_id=client.client_id,
            subject=user.subject,
            groups=state.groups if state is not None else frozenset(),
            scopes=frozenset(request.scope),
            delivery_mode=client.backchannel_token_delivery_mode,
            expires_in=request.expires_in,
            caller_ip=parse_caller_ip(caller_ip),
            now=services.policy.clock(),
        )
        decision = evaluate(rules.rules, facts)
        services.metrics.record_policy_decision(
            allowed=decision.allowed, would_deny=decision.would_deny
        )
        if not decision.allowed or decision.would_deny:
            await insert_audit_event(
                services.pool, "policy_decision", **ids, detail=_decision_detail(decision, facts)
            )
        if not decision.allowed:
            raise AccessDenied(POLICY_DENIED)
        if decision.would_deny:
            assert decision.report is not None
            added["would_deny"] = [r.name for r in decision.report.rules]
        if decision.enforced.reason == "allowed_by_rule":
            added["allowed_by"] = [r.name for r in decision.enforced.rules]
    refusal = fatigue_refusal(state, limits) if state is not None else None
    if refusal is not None:
        services.metrics.record_fatigue_refusal(refusal.detail.get("cap", "muted"))
        await insert_audit_event(
            services.pool,
            refusal.event,
            **ids,
            detail={"error": AccessDenied.error, **refusal.detail},
        )
        raise AccessDenied(refusal.description)
    # The pending count is only read (up to the cap) while that cap is on.
    services.metrics.record_admission(state.pending if state and limits.max_pending else None)
    return {"policy": added} if added else {}


def _decision_detail(decision: PolicyDecision, facts: RequestFacts) -> dict[str, Any]:
    request = {
        "scope": sorted(facts.scopes),
        "delivery_mode": facts.delivery_mode,
        "expires_in": facts.expires_in,
        "caller_ip": str(facts.caller_ip) if facts.caller_ip is not None else None,
        "at": facts.now.isoformat(),
    }
    if not decision.allowed:
        detail: dict[str, Any] = {
            "outcome": "deny",
            "mode": "enforce",
            "error": AccessDenied.error,
            **decision.enforced.detail(),
        }
        if decision.report is not None:  # report-only allow rules would let it through
            detail["would_allow"] = decision.report.detail()
    else:
        assert decision.report is not None
        detail = {"outcome": "would_deny", "mode": "report-only", **decision.report.detail()}
    return {**detail, "request": request}
