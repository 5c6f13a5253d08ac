"""Pure policy evaluation: the facts of one request against a rule set (docs/policy.md).

1. An enabled deny rule whose target and ``when`` both hold denies the request:
   explicit deny wins over any allow.
2. Otherwise, if the request is in the target of one or more allow rules, at
   least one of them must have its ``when`` hold, else the request is denied
   as not on the allow list. Allow rules with overlapping targets add up.
3. Otherwise the request is allowed.

Enforced rules decide. The same evaluation with report-only rules counted too
tells what enforcing them would change ("would deny" or "would allow").

``require-uv`` rules neither allow nor deny: an enforced one whose target and
``when`` hold makes the request need user verification at approval; report-only
ones that hold, when no enforced one does, are reported as "would require".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from backchannel.policy.rules import REQUIRE_UV, AmountOver, Conditions, Network, Rule

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Reason = Literal["no_rule", "allowed_by_rule", "denied_by_rule", "not_allow_listed"]


@dataclass(frozen=True)
class RequestFacts:
    """What rules may look at; ``now`` is an aware datetime."""

    client_id: str
    subject: str
    groups: frozenset[str]
    scopes: frozenset[str]
    delivery_mode: str
    expires_in: int
    caller_ip: IPAddress | None
    now: datetime
    # The (currency, amount) pairs the request's authorization details carry.
    amounts: tuple[tuple[str, Decimal], ...] = ()


@dataclass(frozen=True)
class Outcome:
    """One evaluation: ``rules`` are those that decided it (none for ``no_rule``)."""

    allowed: bool
    reason: Reason
    rules: tuple[Rule, ...] = ()

    def detail(self) -> dict[str, Any]:
        return {"reason": self.reason, "rules": [r.ref() for r in self.rules]}


@dataclass(frozen=True)
class PolicyDecision:
    """The enforced outcome, and the report-only one when it differs."""

    enforced: Outcome
    report: Outcome | None = None
    # require-uv rules that hold: enforced ones, and report-only ones when no enforced one does.
    require_uv: tuple[Rule, ...] = ()
    would_require_uv: tuple[Rule, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.enforced.allowed

    @property
    def user_verification(self) -> str | None:
        """``required``, ``would_require`` (report-only rules only) or None."""
        if self.require_uv:
            return "required"
        return "would_require" if self.would_require_uv else None

    @property
    def would_deny(self) -> bool:
        return self.allowed and self.report is not None and not self.report.allowed


def parse_caller_ip(value: str | None) -> IPAddress | None:
    """The caller's address, or ``None`` if absent or not an IP address."""
    if not value:
        return None
    try:
        return ipaddress.ip_address(value.split("%", 1)[0])
    except ValueError:
        return None


def evaluate(rules: Sequence[Rule], facts: RequestFacts) -> PolicyDecision:
    """Decide ``facts`` against the enabled ``rules``."""
    active = [r for r in rules if r.enabled and r.effect != REQUIRE_UV]
    enforced_rules = [r for r in active if r.mode == "enforce"]
    enforced = _outcome(enforced_rules, facts)
    uv = _requiring_uv(rules, facts)
    if len(enforced_rules) == len(active):
        return PolicyDecision(enforced, None, *uv)
    candidate = _outcome(active, facts)
    report = candidate if candidate.allowed != enforced.allowed else None
    return PolicyDecision(enforced, report, *uv)


def _requiring_uv(
    rules: Sequence[Rule], facts: RequestFacts
) -> tuple[tuple[Rule, ...], tuple[Rule, ...]]:
    holding = [
        r
        for r in rules
        if r.enabled and r.effect == REQUIRE_UV and holds(r.target, facts) and holds(r.when, facts)
    ]
    enforced = tuple(r for r in holding if r.mode == "enforce")
    return enforced, () if enforced else tuple(holding)


def _outcome(rules: Iterable[Rule], facts: RequestFacts) -> Outcome:
    denying: list[Rule] = []
    governing: list[Rule] = []
    granting: list[Rule] = []
    for rule in rules:
        if not holds(rule.target, facts):
            continue
        if rule.effect == "deny":
            if holds(rule.when, facts):
                denying.append(rule)
            continue
        if rule.effect != "allow":
            continue
        governing.append(rule)
        if holds(rule.when, facts):
            granting.append(rule)
    if denying:
        return Outcome(False, "denied_by_rule", tuple(denying))
    if governing and not granting:
        return Outcome(False, "not_allow_listed", tuple(governing))
    if granting:
        return Outcome(True, "allowed_by_rule", tuple(granting))
    return Outcome(True, "no_rule")


def holds(c: Conditions, facts: RequestFacts) -> bool:
    """Whether every condition given in ``c`` holds for ``facts``."""
    return (
        _member(facts.client_id, c.clients, c.not_clients)
        and _member(facts.subject, c.users, c.not_users)
        and (c.groups is None or not c.groups.isdisjoint(facts.groups))
        and (c.not_groups is None or c.not_groups.isdisjoint(facts.groups))
        and (c.scopes_any is None or not c.scopes_any.isdisjoint(facts.scopes))
        and (c.scopes_within is None or facts.scopes <= c.scopes_within)
        and (c.delivery_modes is None or facts.delivery_mode in c.delivery_modes)
        and (c.expiry_over is None or facts.expires_in > c.expiry_over)
        and (c.expiry_at_most is None or facts.expires_in <= c.expiry_at_most)
        and (c.ip_in is None or _in_networks(facts.caller_ip, c.ip_in))
        and (c.ip_not_in is None or not _in_networks(facts.caller_ip, c.ip_not_in))
        and (c.during is None or c.during.contains(facts.now))
        and (c.outside is None or not c.outside.contains(facts.now))
        and (c.amount_over is None or _over(facts.amounts, c.amount_over))
    )


def _over(amounts: tuple[tuple[str, Decimal], ...], limit: AmountOver) -> bool:
    return any(currency == limit.currency and value > limit.value for currency, value in amounts)


def _member(value: str, some: frozenset[str] | None, none: frozenset[str] | None) -> bool:
    return (some is None or value in some) and (none is None or value not in none)


def _in_networks(address: IPAddress | None, networks: tuple[Network, ...]) -> bool:
    """An unknown address is in no network, so ``ip_in`` fails and ``ip_not_in`` holds."""
    if address is None:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == n.version and address in n for n in networks)
