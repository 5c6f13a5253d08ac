"""The policy rule model (docs/policy.md): frozen dataclasses, built only by validation.

A rule has an ``effect`` (allow, deny or require-uv), a ``mode`` (enforce or
report-only), a ``target`` (which requests it is about) and ``when`` conditions:

- deny: a request in the target that meets ``when`` is denied;
- allow: an allow list for its target: a request in the target of some allow
  rule must meet the ``when`` of at least one of those rules, else it is denied;
- require-uv: a request in the target that meets ``when`` can only be approved
  with the user's fingerprint, face or PIN (WebAuthn user verification).

Both ``target`` and ``when`` are :class:`Conditions`: every given condition
must hold (AND); a list means any of its entries (OR). Empty means every request.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, time
from decimal import Decimal
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Effect = Literal["allow", "deny", "require-uv"]
Mode = Literal["enforce", "report-only"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Path = tuple[str | int, ...]

EFFECTS: tuple[Effect, ...] = ("allow", "deny", "require-uv")
REQUIRE_UV: Effect = "require-uv"
MODES: tuple[Mode, ...] = ("enforce", "report-only")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DELIVERY_MODES = ("poll", "ping", "push")
RULE_KEYS = ("name", "effect", "mode", "enabled", "description", "target", "when")

RULE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}")
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,128}")
_CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
CURRENCY = re.compile(r"[A-Z]{3}")
DECIMAL_AMOUNT = re.compile(r"(0|[1-9][0-9]{0,14})(\.[0-9]{1,5})?")
MAX_LIST = 1000
MAX_DESCRIPTION = 500
MAX_EXPIRY = 86400


@dataclass(frozen=True)
class Problem:
    """One validation failure; ``path`` locates it (``("rules", 2, "when", "clients")``)."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{dotted(self.path)}: {self.message}" if self.path else self.message


def dotted(path: Path) -> str:
    """``rules[2].when.clients`` for a problem path."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


class PolicyError(ValueError):
    """Rules failed validation; ``problems`` lists every failure found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("invalid policy:\n" + "\n".join(f"  - {p}" for p in self.problems))


@dataclass(frozen=True)
class TimeWindow:
    """Local days and time of day: ``start`` inclusive, ``end`` exclusive.

    ``start > end`` wraps past midnight; ``start == end`` is the whole day.
    """

    days: frozenset[int]  # 0 = Monday
    start: time
    end: time
    tz: str = "UTC"
    zone: ZoneInfo = field(default=ZoneInfo("UTC"), compare=False, repr=False)

    def contains(self, moment: datetime) -> bool:
        local = moment.astimezone(self.zone)
        clock = local.time().replace(tzinfo=None)
        if self.start < self.end:
            in_hours = self.start <= clock < self.end
        else:
            in_hours = clock >= self.start or clock < self.end
        return local.weekday() in self.days and in_hours

    def to_json(self) -> dict[str, Any]:
        return {
            "days": [DAYS[d] for d in sorted(self.days)],
            "from": self.start.strftime("%H:%M"),
            "to": self.end.strftime("%H:%M"),
            "tz": self.tz,
        }


@dataclass(frozen=True)
class AmountOver:
    """Holds for a request carrying an amount above ``value`` in ``currency`` (a payment's
    ``instructedAmount``); amounts in other currencies never match."""

    currency: str
    value: Decimal

    def to_json(self) -> dict[str, Any]:
        return {"currency": self.currency, "value": str(self.value)}


@dataclass(frozen=True)
class Conditions:
    """Facts a request must show; ``None`` means "not constrained"."""

    clients: frozenset[str] | None = None
    not_clients: frozenset[str] | None = None
    users: frozenset[str] | None = None  # subjects
    not_users: frozenset[str] | None = None
    groups: frozenset[str] | None = None  # the user is in any of them
    not_groups: frozenset[str] | None = None  # the user is in none of them
    scopes_any: frozenset[str] | None = None  # asks for any of these scopes
    scopes_within: frozenset[str] | None = None  # asks for nothing but these scopes
    delivery_modes: frozenset[str] | None = None
    expiry_over: int | None = None  # the request would live longer than this (seconds)
    expiry_at_most: int | None = None
    ip_in: tuple[Network, ...] | None = None  # the caller's address is in any of them
    ip_not_in: tuple[Network, ...] | None = None  # in none of them (or unknown)
    during: TimeWindow | None = None
    outside: TimeWindow | None = None
    amount_over: AmountOver | None = None

    @property
    def uses_groups(self) -> bool:
        return self.groups is not None or self.not_groups is not None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, frozenset):
                data[f.name] = sorted(value)
            elif isinstance(value, tuple):
                data[f.name] = [str(n) for n in value]
            elif isinstance(value, TimeWindow | AmountOver):
                data[f.name] = value.to_json()
            else:
                data[f.name] = value
        return data


CONDITION_KEYS = tuple(f.name for f in fields(Conditions))


def parse_amount(currency: object, value: object) -> tuple[str, Decimal] | None:
    """An ISO 4217 currency code and a decimal string (``"80.00"``), or None if either
    is malformed: amounts are compared as decimals, never as binary floats."""
    if not isinstance(currency, str) or not CURRENCY.fullmatch(currency):
        return None
    if not isinstance(value, str) or not DECIMAL_AMOUNT.fullmatch(value):
        return None
    return currency, Decimal(value)


@dataclass(frozen=True)
class Rule:
    name: str
    effect: Effect
    mode: Mode = "report-only"
    target: Conditions = Conditions()
    when: Conditions = Conditions()
    enabled: bool = True
    description: str = ""
    # The database row id, once stored (audit rows carry it with the name).
    policy_id: int | None = field(default=None, compare=False)

    @property
    def uses_groups(self) -> bool:
        return self.target.uses_groups or self.when.uses_groups

    def ref(self) -> dict[str, Any]:
        """How audit rows name the rule."""
        return {"id": self.policy_id, "name": self.name, "effect": self.effect, "mode": self.mode}

    def to_json(self) -> dict[str, Any]:
        """The rule as it appears in a policy file (empty parts left out)."""
        data: dict[str, Any] = {"name": self.name, "effect": self.effect, "mode": self.mode}
        if not self.enabled:
            data["enabled"] = False
        if self.description:
            data["description"] = self.description
        for key, conditions in (("target", self.target), ("when", self.when)):
            if as_json := conditions.to_json():
                data[key] = as_json
        return data


def parse_rule(data: object, path: Path = ()) -> Rule:
    """Validate one rule document; raise :class:`PolicyError` listing every problem."""
    problems: list[Problem] = []
    rule = _rule(data, path, problems)
    if problems or rule is None:
        raise PolicyError(problems)
    return rule


def parse_rules(items: object, path: Path = ("rules",)) -> tuple[Rule, ...]:
    """Validate a list of rules with distinct names."""
    problems: list[Problem] = []
    if not isinstance(items, list):
        raise PolicyError([Problem(path, "expected a list of rules")])
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        rule = _rule(item, (*path, index), problems)
        name = item.get("name") if isinstance(item, Mapping) else None
        if isinstance(name, str) and name in seen:
            problems.append(Problem((*path, index, "name"), f"{name!r} is also rule {seen[name]}"))
        if isinstance(name, str):
            seen.setdefault(name, index)
        if rule is not None:
            rules.append(rule)
    if problems:
        raise PolicyError(problems)
    return tuple(rules)


def parse_conditions(data: object, path: Path = ()) -> Conditions:
    """Validate a conditions object (a rule's ``target`` or ``when``)."""
    problems: list[Problem] = []
    conditions = _conditions(data, path, problems)
    if problems:
        raise PolicyError(problems)
    return conditions


def _rule(data: object, path: Path, problems: list[Problem]) -> Rule | None:
    if not isinstance(data, Mapping):
        problems.append(Problem(path, "expected a table (object) describing a rule"))
        return None
    before = len(problems)
    _unknown_keys(data, RULE_KEYS, path, problems)
    name = data.get("name")
    if not isinstance(name, str) or not RULE_NAME.fullmatch(name):
        problems.append(
            Problem((*path, "name"), "required: 1-64 of a-z 0-9 . _ -, starting with a-z or 0-9")
        )
    effect = _choice(data.get("effect"), EFFECTS, (*path, "effect"), problems, required=True)
    mode = _choice(data.get("mode", "report-only"), MODES, (*path, "mode"), problems)
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        problems.append(Problem((*path, "enabled"), "expected true or false"))
    description = data.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        problems.append(
            Problem((*path, "description"), f"expected text of at most {MAX_DESCRIPTION} chars")
        )
    target = _conditions(data.get("target", {}), (*path, "target"), problems)
    when = _conditions(data.get("when", {}), (*path, "when"), problems)
    if len(problems) > before:
        return None
    assert isinstance(name, str) and isinstance(description, str) and isinstance(enabled, bool)
    return Rule(name, cast(Effect, effect), cast(Mode, mode), target, when, enabled, description)


def _conditions(data: object, path: Path, problems: list[Problem]) -> Conditions:
    if not isinstance(data, Mapping):
        problems.append(Problem(path, "expected a table (object) of conditions"))
        return Conditions()
    _unknown_keys(data, CONDITION_KEYS, path, problems)
    values: dict[str, Any] = {}
    for key in CONDITION_KEYS:
        if key not in data:
            continue
        where = (*path, key)
        raw = data[key]
        if key in ("clients", "not_clients", "users", "not_users"):
            values[key] = _names(raw, where, problems, None, "a non-empty string")
        elif key in ("groups", "not_groups"):
            values[key] = _names(raw, where, problems, GROUP_NAME, "a group name")
        elif key in ("scopes_any", "scopes_within"):
            values[key] = _names(raw, where, problems, _SCOPE, "a scope value")
        elif key == "delivery_modes":
            modes = _names(raw, where, problems, None, "a delivery mode")
            bad = sorted(modes - set(DELIVERY_MODES)) if modes else []
            if bad:
                problems.append(Problem(where, f"unknown {bad}; use {', '.join(DELIVERY_MODES)}"))
            values[key] = modes
        elif key in ("expiry_over", "expiry_at_most"):
            values[key] = _seconds(raw, where, problems)
        elif key in ("ip_in", "ip_not_in"):
            values[key] = _networks(raw, where, problems)
        elif key == "amount_over":
            values[key] = _amount_over(raw, where, problems)
        else:
            values[key] = _time_window(raw, where, problems)
    return Conditions(**{k: v for k, v in values.items() if v is not None})


def _unknown_keys(
    data: Mapping[Any, Any], known: Sequence[str], path: Path, problems: list[Problem]
) -> None:
    for key in data:
        if key in known:
            continue
        close = difflib.get_close_matches(str(key), known, n=1)
        if close:
            hint = f" (did you mean {close[0]!r}?)"
        elif known is RULE_KEYS and difflib.get_close_matches(str(key), CONDITION_KEYS, n=1):
            hint = "; conditions go inside the rule's target or when"
        else:
            hint = f"; known: {', '.join(known)}"
        problems.append(Problem((*path, str(key)), f"unknown key{hint}"))


def _choice(
    value: object,
    allowed: Sequence[str],
    path: Path,
    problems: list[Problem],
    *,
    required: bool = False,
) -> str:
    if value in allowed:
        assert isinstance(value, str)
        return value
    what = "required: " if required and value is None else ""
    problems.append(Problem(path, f"{what}expected one of {', '.join(allowed)}, got {value!r}"))
    return allowed[0]


def _names(
    value: object, path: Path, problems: list[Problem], pattern: re.Pattern[str] | None, what: str
) -> frozenset[str] | None:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or len(value) > MAX_LIST:
        problems.append(Problem(path, f"expected a list of 1 to {MAX_LIST} entries"))
        return None
    for index, item in enumerate(value):
        valid = isinstance(item, str) and 0 < len(item) <= 256
        if not valid or (pattern is not None and not pattern.fullmatch(str(item))):
            problems.append(Problem((*path, index), f"{item!r} is not {what}"))
            return None
    return frozenset(value)


def _seconds(value: object, path: Path, problems: list[Problem]) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_EXPIRY:
        problems.append(Problem(path, f"expected whole seconds from 1 to {MAX_EXPIRY}"))
        return None
    return value


def _networks(value: object, path: Path, problems: list[Problem]) -> tuple[Network, ...] | None:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or len(value) > MAX_LIST:
        problems.append(Problem(path, "expected a list of networks such as 203.0.113.0/24"))
        return None
    networks: list[Network] = []
    for index, item in enumerate(value):
        try:
            networks.append(ipaddress.ip_network(str(item), strict=True))
        except ValueError as exc:
            hint = ""
            if isinstance(item, str) and "host bits" in str(exc):
                hint = f" (did you mean {ipaddress.ip_network(item, strict=False)}?)"
            problems.append(Problem((*path, index), f"{item!r} is not a network: {exc}{hint}"))
            return None
    return tuple(networks)


def _amount_over(value: object, path: Path, problems: list[Problem]) -> AmountOver | None:
    if not isinstance(value, Mapping):
        problems.append(Problem(path, 'expected {currency = "EUR", value = "30.00"}'))
        return None
    before = len(problems)
    _unknown_keys(value, ("currency", "value"), path, problems)
    amount = parse_amount(value.get("currency"), value.get("value"))
    if amount is None:
        problems.append(
            Problem(
                path,
                "required: currency, three capital letters, and value, a decimal "
                f'string such as "30.00"; got {dict(value)!r}',
            )
        )
    if len(problems) > before or amount is None:
        return None
    return AmountOver(*amount)


def _time_window(value: object, path: Path, problems: list[Problem]) -> TimeWindow | None:
    if not isinstance(value, Mapping):
        problems.append(Problem(path, 'expected {from = "08:00", to = "18:00", days, tz}'))
        return None
    before = len(problems)
    _unknown_keys(value, ("days", "from", "to", "tz"), path, problems)
    start = _clock(value.get("from"), (*path, "from"), problems)
    end = _clock(value.get("to"), (*path, "to"), problems)
    days = _days(value.get("days", ["mon-sun"]), (*path, "days"), problems)
    tz = value.get("tz", "UTC")
    zone = ZoneInfo("UTC")
    try:
        if not isinstance(tz, str) or not tz or ".." in tz or tz.startswith("/"):
            raise ZoneInfoNotFoundError(tz)
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(Problem((*path, "tz"), f"unknown time zone {tz!r} (e.g. Europe/London)"))
    if len(problems) > before or start is None or end is None or days is None:
        return None
    assert isinstance(tz, str)
    return TimeWindow(days, start, end, tz, zone)


def _clock(value: object, path: Path, problems: list[Problem]) -> time | None:
    match = _CLOCK.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        problems.append(Problem(path, f'required: a time of day "HH:MM" (24 h), got {value!r}'))
        return None
    return time(int(match.group(1)), int(match.group(2)))


def _days(value: object, path: Path, problems: list[Problem]) -> frozenset[int] | None:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        problems.append(Problem(path, 'expected a list of days such as ["mon-fri", "sun"]'))
        return None
    days: set[int] = set()
    for index, item in enumerate(value):
        first, _, last = str(item).lower().partition("-")
        if first not in DAYS or (last and last not in DAYS):
            problems.append(Problem((*path, index), f"{item!r}: use mon..sun or a range mon-fri"))
            return None
        a, b = DAYS.index(first), DAYS.index(last or first)
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(b + 1)])
    return frozenset(days)
