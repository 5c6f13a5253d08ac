"""Pure evaluation: deny wins, allow lists add up, report-only only reports."""

from __future__ import annotations

import dataclasses
import ipaddress
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from backchannel.policy.evaluate import RequestFacts, evaluate, holds, parse_caller_ip
from backchannel.policy.rules import Rule, parse_conditions, parse_rule

WEDNESDAY_NOON = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)

FACTS = RequestFacts(
    client_id="shop",
    subject="alice",
    groups=frozenset({"retail"}),
    scopes=frozenset({"openid", "email"}),
    delivery_mode="poll",
    expires_in=300,
    caller_ip=ipaddress.ip_address("203.0.113.5"),
    now=WEDNESDAY_NOON,
)


def rule(name: str, effect: str, mode: str = "enforce", **parts: Any) -> Rule:
    return parse_rule({"name": name, "effect": effect, "mode": mode, **parts})


def facts(**changes: Any) -> RequestFacts:
    return dataclasses.replace(FACTS, **changes)


def test_without_rules_everything_is_allowed() -> None:
    decision = evaluate([], FACTS)
    assert decision.allowed and decision.enforced.reason == "no_rule" and decision.report is None


def test_explicit_deny_wins_over_a_matching_allow() -> None:
    allow = rule("shop-ok", "allow", target={"clients": ["shop"]})
    deny = rule("no-email", "deny", when={"scopes_any": ["email"]})
    decision = evaluate([allow, deny], FACTS)
    assert not decision.allowed
    assert decision.enforced.reason == "denied_by_rule"
    assert [r.name for r in decision.enforced.rules] == ["no-email"]


def test_an_allow_list_denies_what_it_does_not_list_within_its_target() -> None:
    desk_only = rule(
        "retail-desk", "allow", target={"groups": ["retail"]}, when={"clients": ["desk"]}
    )
    refused = evaluate([desk_only], FACTS)
    assert not refused.allowed and refused.enforced.reason == "not_allow_listed"
    assert evaluate([desk_only], facts(client_id="desk")).enforced.reason == "allowed_by_rule"
    # Users outside the target are none of the rule's business.
    assert evaluate([desk_only], facts(groups=frozenset())).enforced.reason == "no_rule"


def test_allow_rules_with_overlapping_targets_add_up() -> None:
    desk = rule("desk", "allow", target={"groups": ["retail"]}, when={"clients": ["desk"]})
    shop = rule("shop", "allow", target={"groups": ["retail"]}, when={"clients": ["shop"]})
    decision = evaluate([desk, shop], FACTS)
    assert decision.allowed and [r.name for r in decision.enforced.rules] == ["shop"]


def test_disabled_rules_are_ignored() -> None:
    deny = dataclasses.replace(rule("all", "deny"), enabled=False)
    assert evaluate([deny], FACTS).allowed


def test_a_report_only_deny_would_deny_without_denying() -> None:
    decision = evaluate([rule("trial", "deny", mode="report-only")], FACTS)
    assert decision.allowed and decision.would_deny
    assert decision.report is not None
    assert [r.name for r in decision.report.rules] == ["trial"]


def test_a_report_only_allow_rule_shows_what_it_would_let_through() -> None:
    enforced = rule("desk", "allow", target={"groups": ["retail"]}, when={"clients": ["desk"]})
    trial = rule(
        "shop-too",
        "allow",
        "report-only",
        target={"groups": ["retail"]},
        when={"clients": ["shop"]},
    )
    decision = evaluate([enforced, trial], FACTS)
    assert not decision.allowed
    assert decision.report is not None and decision.report.allowed
    assert not decision.would_deny


def test_report_only_agreeing_with_enforcement_reports_nothing() -> None:
    decision = evaluate([rule("a", "deny"), rule("b", "deny", mode="report-only")], FACTS)
    assert not decision.allowed and decision.report is None


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ({"clients": ["shop", "desk"]}, True),
        ({"not_clients": ["shop"]}, False),
        ({"users": ["bob"]}, False),
        ({"not_users": ["bob"]}, True),
        ({"groups": ["staff", "retail"]}, True),
        ({"not_groups": ["retail"]}, False),
        ({"scopes_any": ["email", "phone"]}, True),
        ({"scopes_within": ["openid", "profile"]}, False),
        ({"scopes_within": ["openid", "email", "profile"]}, True),
        ({"delivery_modes": ["ping"]}, False),
        ({"expiry_over": 299}, True),
        ({"expiry_over": 300}, False),
        ({"expiry_at_most": 300}, True),
        ({"ip_in": ["203.0.113.0/24"]}, True),
        ({"ip_in": ["198.51.100.0/24", "2001:db8::/32"]}, False),
        ({"ip_not_in": ["203.0.113.0/24"]}, False),
        ({"clients": ["shop"], "users": ["bob"]}, False),
        ({}, True),
    ],
)
def test_each_condition(conditions: dict[str, Any], expected: bool) -> None:
    assert holds(parse_conditions(conditions), FACTS) is expected


def test_an_unknown_caller_address_is_in_no_network() -> None:
    unknown = facts(caller_ip=None)
    assert not holds(parse_conditions({"ip_in": ["0.0.0.0/0"]}), unknown)
    assert holds(parse_conditions({"ip_not_in": ["0.0.0.0/0"]}), unknown)


def test_ipv4_mapped_ipv6_callers_match_ipv4_networks() -> None:
    mapped = facts(caller_ip=parse_caller_ip("::ffff:203.0.113.5"))
    assert holds(parse_conditions({"ip_in": ["203.0.113.0/24"]}), mapped)


def test_caller_addresses_that_are_not_ip_addresses_are_unknown() -> None:
    assert parse_caller_ip("testclient") is None
    assert parse_caller_ip(None) is None
    assert parse_caller_ip("fe80::1%eth0") == ipaddress.ip_address("fe80::1")


@pytest.mark.parametrize(
    ("moment", "inside"),
    [
        (datetime(2026, 6, 10, 7, 59, tzinfo=UTC), True),  # 08:59 in London (BST)
        (datetime(2026, 6, 10, 6, 59, tzinfo=UTC), False),  # 07:59 in London
        (datetime(2026, 6, 10, 16, 59, tzinfo=UTC), True),  # 17:59
        (datetime(2026, 6, 10, 17, 0, tzinfo=UTC), False),  # 18:00 is outside
        (datetime(2026, 6, 13, 10, 0, tzinfo=UTC), False),  # Saturday
        (datetime(2026, 1, 14, 8, 0, tzinfo=UTC), True),  # 08:00 GMT in winter
    ],
)
def test_time_windows_use_the_rules_time_zone(moment: datetime, inside: bool) -> None:
    office = {"days": ["mon-fri"], "from": "08:00", "to": "18:00", "tz": "Europe/London"}
    assert holds(parse_conditions({"during": office}), facts(now=moment)) is inside
    assert holds(parse_conditions({"outside": office}), facts(now=moment)) is not inside


@pytest.mark.parametrize(("hour", "inside"), [(22, True), (2, True), (6, False), (12, False)])
def test_a_window_may_wrap_past_midnight(hour: int, inside: bool) -> None:
    night = parse_conditions({"during": {"from": "22:00", "to": "06:00"}})
    moment = datetime(2026, 6, 10, hour, 0, tzinfo=UTC)
    assert holds(night, facts(now=moment)) is inside


def test_require_uv_rules_neither_allow_nor_deny_and_enforced_ones_outrank_report_only() -> None:
    uv_everything = rule("uv-always", "require-uv")
    uv_email = rule("uv-email", "require-uv", "report-only", when={"scopes_any": ["email"]})
    uv_desk = rule("uv-desk", "require-uv", target={"clients": ["desk"]})
    decision = evaluate([uv_everything, uv_email], FACTS)
    assert decision.allowed and decision.enforced.reason == "no_rule" and decision.report is None
    assert [r.name for r in decision.require_uv] == ["uv-always"]
    assert decision.would_require_uv == () and decision.user_verification == "required"

    only_report = evaluate([uv_email, uv_desk], FACTS)
    assert only_report.require_uv == () and only_report.user_verification == "would_require"
    assert [r.name for r in only_report.would_require_uv] == ["uv-email"]

    untouched = evaluate([uv_email, uv_desk], facts(scopes=frozenset({"openid"})))
    assert untouched.user_verification is None
    # Not an allow rule: a request in its target is not thereby "not allow-listed".
    assert evaluate([uv_desk], facts(client_id="desk")).enforced.reason == "no_rule"
    disabled = dataclasses.replace(uv_everything, enabled=False)
    assert evaluate([disabled], FACTS).user_verification is None


@pytest.mark.parametrize(
    ("amounts", "holds_"),
    [
        ((), False),
        ((("EUR", Decimal("30.00")),), False),
        ((("EUR", Decimal("30.01")),), True),
        ((("USD", Decimal("5000")),), False),
        ((("USD", Decimal("5000")), ("EUR", Decimal("31"))), True),
    ],
    ids=["no amount", "exactly the limit", "a cent over", "another currency", "any entry over"],
)
def test_amount_over_holds_for_an_amount_above_the_limit_in_its_currency(
    amounts: tuple[tuple[str, Decimal], ...], holds_: bool
) -> None:
    over = parse_conditions({"amount_over": {"currency": "EUR", "value": "30.00"}})
    assert holds(over, facts(amounts=amounts)) is holds_
