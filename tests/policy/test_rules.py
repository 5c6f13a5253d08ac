"""Validating rules: every problem reported, each with where it is and what to write."""

from __future__ import annotations

import ipaddress
from datetime import time
from decimal import Decimal
from typing import Any

import pytest

from backchannel.policy.rules import (
    AmountOver,
    Conditions,
    PolicyError,
    Rule,
    parse_conditions,
    parse_rule,
    parse_rules,
)


def problems_of(data: Any, *, many: bool = False) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_rules(data) if many else parse_rule(data)
    return [str(p) for p in caught.value.problems]


def test_a_minimal_rule_defaults_to_report_only_and_enabled() -> None:
    rule = parse_rule({"name": "block-all", "effect": "deny"})
    assert rule == Rule("block-all", "deny", "report-only", Conditions(), Conditions(), True, "")


def test_a_full_rule_reads_every_condition() -> None:
    rule = parse_rule(
        {
            "name": "retail.desk-only",
            "effect": "allow",
            "mode": "enforce",
            "description": "Only the support desk prompts retail users",
            "target": {"groups": ["retail"], "not_users": ["ops-robot"]},
            "when": {
                "clients": ["support-desk"],
                "scopes_within": ["openid", "profile"],
                "delivery_modes": ["poll"],
                "expiry_at_most": 120,
                "ip_in": ["203.0.113.0/24", "2001:db8::/32"],
                "during": {
                    "days": ["mon-fri"],
                    "from": "08:00",
                    "to": "18:00",
                    "tz": "Europe/London",
                },
            },
        }
    )
    assert rule.mode == "enforce"
    assert rule.target.groups == frozenset({"retail"})
    assert rule.uses_groups
    when = rule.when
    assert when.clients == frozenset({"support-desk"})
    assert when.expiry_at_most == 120
    assert when.ip_in == (
        ipaddress.ip_network("203.0.113.0/24"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    assert when.during is not None
    assert when.during.days == frozenset(range(5))
    assert (when.during.start, when.during.end) == (time(8), time(18))


def test_a_rule_survives_its_own_json_unchanged() -> None:
    document = {
        "name": "night",
        "effect": "deny",
        "mode": "enforce",
        "enabled": False,
        "description": "no prompts at night",
        "when": {"outside": {"days": ["mon", "sun"], "from": "07:00", "to": "22:00", "tz": "UTC"}},
    }
    rule = parse_rule(document)
    assert rule.to_json() == document
    assert parse_rule(rule.to_json()) == rule


def test_every_problem_is_reported_with_its_path() -> None:
    problems = problems_of(
        {
            "name": "Bad Name",
            "effect": "block",
            "mode": "enforced",
            "when": {"client": ["x"], "expiry_over": 0, "groups": ["no spaces please"]},
        }
    )
    assert problems == [
        "name: required: 1-64 of a-z 0-9 . _ -, starting with a-z or 0-9",
        "effect: expected one of allow, deny, require-uv, got 'block'",
        "mode: expected one of enforce, report-only, got 'enforced'",
        "when.client: unknown key (did you mean 'clients'?)",
        "when.groups[0]: 'no spaces please' is not a group name",
        "when.expiry_over: expected whole seconds from 1 to 86400",
    ]


def test_a_missing_effect_is_called_required() -> None:
    assert problems_of({"name": "x"}) == [
        "effect: required: expected one of allow, deny, require-uv, got None"
    ]


def test_a_network_with_host_bits_suggests_the_network_meant() -> None:
    [problem] = problems_of({"name": "x", "effect": "deny", "when": {"ip_in": ["10.1.2.3/8"]}})
    assert problem.startswith("when.ip_in[0]: '10.1.2.3/8' is not a network")
    assert problem.endswith("(did you mean 10.0.0.0/8?)")


def test_a_bare_address_is_a_single_host_network() -> None:
    conditions = parse_conditions({"ip_not_in": "192.0.2.7"})
    assert conditions.ip_not_in == (ipaddress.ip_network("192.0.2.7/32"),)


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        ({"from": "8:00", "to": "18:00"}, 'during.from: required: a time of day "HH:MM" (24 h)'),
        ({"from": "08:00", "to": "24:00"}, 'during.to: required: a time of day "HH:MM" (24 h)'),
        ({"from": "08:00", "to": "18:00", "tz": "Mars/Olympus"}, "during.tz: unknown time zone"),
        ({"from": "08:00", "to": "18:00", "days": ["weekday"]}, "during.days[0]: 'weekday'"),
        ({"from": "08:00", "to": "18:00", "at": 1}, "during.at: unknown key"),
    ],
)
def test_time_windows_are_checked(window: dict[str, Any], expected: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_conditions({"during": window})
    assert str(caught.value.problems[0]).startswith(expected)


def test_day_ranges_may_wrap_the_week() -> None:
    window = parse_conditions({"during": {"days": ["fri-mon"], "from": "00:00", "to": "00:00"}})
    assert window.during is not None
    assert window.during.days == frozenset({4, 5, 6, 0})


def test_unknown_delivery_modes_are_refused() -> None:
    with pytest.raises(PolicyError, match="unknown \\['fax'\\]"):
        parse_conditions({"delivery_modes": ["poll", "fax"]})


def test_rule_names_must_be_distinct_in_a_set() -> None:
    problems = problems_of(
        [{"name": "a", "effect": "deny"}, {"name": "a", "effect": "allow"}], many=True
    )
    assert problems == ["rules[1].name: 'a' is also rule 0"]


def test_a_set_must_be_a_list_of_tables() -> None:
    assert problems_of({"name": "a"}, many=True) == ["rules: expected a list of rules"]
    assert problems_of(["a"], many=True) == [
        "rules[0]: expected a table (object) describing a rule"
    ]


def test_an_amount_condition_reads_a_currency_and_a_decimal_string() -> None:
    rule = parse_rule(
        {
            "name": "big-payments",
            "effect": "require-uv",
            "when": {"amount_over": {"currency": "EUR", "value": "30.00"}},
        }
    )
    assert rule.when.amount_over == AmountOver("EUR", Decimal("30.00"))
    assert rule.to_json()["when"] == {"amount_over": {"currency": "EUR", "value": "30.00"}}
    assert parse_rule(rule.to_json()) == rule


@pytest.mark.parametrize(
    "amount_over",
    [
        {"currency": "eur", "value": "30"},
        {"currency": "EUR", "value": 30},
        {"currency": "EUR", "value": "30.0000001"},
        {"currency": "EUR", "value": "1e3"},
        {"value": "30"},
        "30 EUR",
    ],
)
def test_an_amount_condition_refuses_numbers_and_malformed_currencies(amount_over: Any) -> None:
    rule = {"name": "x", "effect": "require-uv", "when": {"amount_over": amount_over}}
    [problem] = problems_of(rule)
    assert problem.startswith("when.amount_over: ")


def test_an_amount_condition_names_an_unknown_member() -> None:
    problems = problems_of(
        {
            "name": "x",
            "effect": "require-uv",
            "when": {"amount_over": {"currency": "EUR", "value": "30", "curency": "EUR"}},
        }
    )
    assert problems == ["when.amount_over.curency: unknown key (did you mean 'currency'?)"]
