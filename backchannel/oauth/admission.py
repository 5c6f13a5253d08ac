"""Admission at /bc-authorize: policy rules, then push-fatigue limits (docs/policy.md).

Policy rules are evaluated after the user is resolved and before the request
is stored, with no database read unless a rule looks at groups. The fatigue
caps and mutes are enforced by the insert statement itself
(``insert_auth_request`` with :func:`prompt_caps`), so an admitted request
costs no extra round trip; :func:`refuse_if_capped` then explains a refusal.
An enforced refusal raises :class:`AccessDenied` after writing its audit row;
the request is never stored, so the user gets no prompt. ``require-uv`` rules
that hold come back in the :class:`Admission`: they are stored with the
request and decide whether approving it needs user verification.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from backchannel.db.audit import insert_audit_event
from backchannel.db.auth_requests import IssuedAuthRequest, PromptCaps
from backchannel.db.clients import Client
from backchannel.db.groups import select_user_groups
from backchannel.db.users import User
from backchannel.errors import AccessDenied
from backchannel.oauth.authentication_request import AuthenticationRequest
from backchannel.oauth.services import Services
from backchannel.policy.evaluate import PolicyDecision, RequestFacts, evaluate, parse_caller_ip
from backchannel.policy.fatigue import FatigueLimits, fatigue_refusal
from backchannel.policy.rules import parse_amount
from backchannel.settings import Settings

POLICY_DENIED = "the request is not allowed by this server's policy"


@dataclass(frozen=True)
class Admission:
    """An admitted request: what its ``auth_request_issued`` row adds, and whether the
    rules require user verification (``required``, ``would_require`` or None)."""

    audit_detail: dict[str, Any] = field(default_factory=dict)
    user_verification: str | None = None


async def admit_request(
    services: Services,
    client: Client,
    user: User,
    request: AuthenticationRequest,
    caller_ip: str | None,
) -> Admission:
    """Apply the policy rules: refuse, or admit (docs/policy.md)."""
    rules = await services.policy.current()
    if not rules.rules:
        return Admission()
    groups: frozenset[str] = frozenset()
    if rules.needs_groups:
        groups = frozenset(await select_user_groups(services.pool, user.user_id))
    ids: dict[str, Any] = {"client_id": client.client_id, "user_id": user.user_id}
    added: dict[str, Any] = {}
    facts = RequestFacts(
        client_id=client.client_id,
        subject=user.subject,
        groups=groups,
        scopes=frozenset(request.scope),
        delivery_mode=client.backchannel_token_delivery_mode,
        expires_in=request.expires_in,
        caller_ip=parse_caller_ip(caller_ip),
        now=services.policy.clock(),
        amounts=instructed_amounts(request.authorization_details),
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
    if decision.require_uv:
        added["require_uv"] = [r.name for r in decision.require_uv]
    if decision.would_require_uv:
        added["would_require_uv"] = [r.name for r in decision.would_require_uv]
    return Admission({"policy": added} if added else {}, decision.user_verification)


def instructed_amounts(
    details: Sequence[Mapping[str, Any]] | None,
) -> tuple[tuple[str, Decimal], ...]:
    """The ``instructedAmount`` of each authorization details entry that has one (the
    built-in ``payment_initiation`` type, and registered types that reuse the member)."""
    amounts = []
    for entry in details or ():
        instructed = entry.get("instructedAmount")
        if isinstance(instructed, Mapping):
            amount = parse_amount(instructed.get("currency"), instructed.get("amount"))
            if amount is not None:
                amounts.append(amount)
    return tuple(amounts)


_caps: tuple[Settings, FatigueLimits, PromptCaps] | None = None


def _limits_and_caps(settings: Settings) -> tuple[FatigueLimits, PromptCaps]:
    """Built once per Settings object: every /bc-authorize needs them."""
    global _caps
    cached = _caps
    if cached is None or cached[0] is not settings:
        limits = FatigueLimits.from_settings(settings)
        caps = PromptCaps(limits.max_pending, limits.max_prompts, limits.window, honour_mutes=True)
        cached = _caps = (settings, limits, caps)
    return cached[1], cached[2]


def prompt_caps(settings: Settings) -> PromptCaps:
    """The caps ``insert_auth_request`` enforces; mutes are always honoured."""
    return _limits_and_caps(settings)[1]


async def refuse_if_capped(
    services: Services, client: Client, user: User, issued: IssuedAuthRequest
) -> None:
    """After the insert: count an admission, or audit and raise the cap that refused it."""
    limits = _limits_and_caps(services.settings)[0]
    if issued.id is not None:
        # The pending count is only read (up to the cap) while that cap is on.
        services.metrics.record_admission(issued.state.pending if limits.max_pending else None)
        return
    refusal = fatigue_refusal(issued.state, limits)
    assert refusal is not None, "the insert refused a request no cap explains"
    services.metrics.record_fatigue_refusal(refusal.detail.get("cap", "muted"))
    await insert_audit_event(
        services.pool,
        refusal.event,
        client_id=client.client_id,
        user_id=user.user_id,
        detail={"error": AccessDenied.error, **refusal.detail},
    )
    raise AccessDenied(refusal.description)


def _decision_detail(decision: PolicyDecision, facts: RequestFacts) -> dict[str, Any]:
    request = {
        "scope": sorted(facts.scopes),
        "delivery_mode": facts.delivery_mode,
        "expires_in": facts.expires_in,
        "caller_ip": str(facts.caller_ip) if facts.caller_ip is not None else None,
        "at": facts.now.isoformat(),
    }
    if facts.amounts:
        request["amounts"] = [{"currency": c, "value": str(v)} for c, v in facts.amounts]
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
