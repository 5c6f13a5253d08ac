"""``backchannel policy list|show|add|remove|enable|disable|import|export``: rules at
/bc-authorize (docs/policy.md).

Every change takes effect on every running replica at once (no restart).
``import`` replaces the whole rule set atomically from a TOML or JSON file,
after validating all of it; ``export`` writes the same format back.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import asyncpg

from backchannel.cli.database import database_command
from backchannel.cli.output import CommandError, Context, UsageError, fields, table
from backchannel.policy.document import (
    Format,
    PolicyFileError,
    dump_policy,
    format_of,
    parse_policy,
)
from backchannel.policy.rules import (
    CONDITION_KEYS,
    EFFECTS,
    MODES,
    PolicyError,
    Rule,
    parse_rule,
)
from backchannel.policy.store import (
    add_rule,
    load_rule,
    load_rules,
    remove_rule,
    replace_rules,
    set_rule_enabled,
)

CONDITION_HELP = (
    "KEY=VALUE, repeatable. Lists are comma-separated (clients=a,b); "
    "expiry_over/expiry_at_most take seconds; during/outside take "
    '"mon-fri 08:00-18:00 Europe/London"; any value may be JSON. Keys: ' + ", ".join(CONDITION_KEYS)
)
_HOURS = re.compile(r"(\d\d:\d\d)-(\d\d:\d\d)")


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """The ``policy`` command group."""
    group = commands.add_parser("policy", help="allow/deny rules applied at /bc-authorize")
    sub = group.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")

    listing = sub.add_parser("list", parents=[common], help="list every rule")
    listing.set_defaults(run=database_command(list_rules))

    show = sub.add_parser("show", parents=[common], help="show one rule")
    show.add_argument("name", metavar="NAME")
    show.set_defaults(run=database_command(show_rule))

    add = sub.add_parser(
        "add",
        parents=[common],
        help="add a rule",
        description="Add a rule. New rules are report-only unless --mode enforce is given: "
        "watch their policy_decision audit rows first.",
    )
    add.add_argument("name", metavar="NAME")
    add.add_argument("--effect", choices=EFFECTS, required=True)
    add.add_argument("--mode", choices=MODES, default="report-only")
    add.add_argument("--description", default="")
    add.add_argument("--disabled", action="store_true", help="store it disabled")
    add.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=("which requests the rule is about; " + CONDITION_HELP),
    )
    add.add_argument(
        "--when",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=(
            "deny: what is denied among them; allow: what is allowed among them; " + CONDITION_HELP
        ),
    )
    add.set_defaults(run=database_command(add_one_rule))

    remove = sub.add_parser("remove", parents=[common], help="delete a rule")
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(run=database_command(remove_one_rule))

    for name, helptext in (("enable", "apply a rule again"), ("disable", "stop applying a rule")):
        action = sub.add_parser(name, parents=[common], help=helptext)
        action.add_argument("name", metavar="NAME")
        action.set_defaults(run=database_command(change_rule), enable=name == "enable")

    load = sub.add_parser(
        "import",
        parents=[common],
        help="replace every rule with those in a TOML or JSON file, atomically",
    )
    load.add_argument("file", type=Path, metavar="FILE")
    load.add_argument("--format", choices=("toml", "json"), help="default: from the extension")
    load.add_argument("--dry-run", action="store_true", help="validate and compare only")
    load.set_defaults(run=database_command(import_rules))

    save = sub.add_parser("export", parents=[common], help="write every rule as TOML or JSON")
    save.add_argument("file", type=Path, nargs="?", metavar="FILE", help="default: stdout")
    save.add_argument("--format", choices=("toml", "json"), help="default: from the extension")
    save.set_defaults(run=database_command(export_rules))


def parse_condition_options(options: list[str], section: str) -> dict[str, Any]:
    """``--when clients=a,b`` options as a conditions document."""
    document: dict[str, Any] = {}
    for option in options:
        key, equals, value = option.partition("=")
        if not equals or not key:
            raise UsageError(f"--{section} {option!r}: expected KEY=VALUE")
        document[key.strip()] = _condition_value(key.strip(), value.strip())
    return document


def _condition_value(key: str, value: str) -> Any:
    if value.startswith(("{", "[", '"')):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{key}: invalid JSON: {exc}") from None
    if key in ("expiry_over", "expiry_at_most"):
        return int(value) if value.isdigit() else value
    if key in ("during", "outside"):
        return _time_window(value)
    return [item.strip() for item in value.split(",") if item.strip()]


def _time_window(value: str) -> dict[str, Any]:
    """``"mon-fri 08:00-18:00 Europe/London"``: days and zone optional, any order."""
    window: dict[str, Any] = {}
    for token in value.split():
        hours = _HOURS.fullmatch(token)
        if hours:
            window["from"], window["to"] = hours.groups()
        elif "/" in token or token.upper() == "UTC":
            window["tz"] = token
        else:
            window["days"] = token.split(",")
    return window


def rule_json(rule: Rule) -> dict[str, Any]:
    return {"id": rule.policy_id, **rule.to_json(), "enabled": rule.enabled}


def _summary(conditions: dict[str, Any]) -> str:
    return " ".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in conditions.items())


def describe(rule: Rule) -> str:
    return fields(
        [
            ("name", rule.name),
            ("effect", rule.effect),
            ("mode", rule.mode),
            ("status", "enabled" if rule.enabled else "disabled"),
            ("description", rule.description or None),
            ("target", _summary(rule.target.to_json()) or "every request"),
            ("when", _summary(rule.when.to_json()) or "always"),
        ]
    )


async def list_rules(ctx: Context, conn: asyncpg.Connection) -> None:
    rules = await load_rules(conn)
    rows = [
        [
            r.name,
            r.effect,
            r.mode,
            "enabled" if r.enabled else "disabled",
            _summary(r.target.to_json()) or "*",
            _summary(r.when.to_json()) or "*",
        ]
        for r in rules
    ]
    ctx.out.result(
        {"rules": [rule_json(r) for r in rules]},
        lambda: table(["NAME", "EFFECT", "MODE", "STATUS", "TARGET", "WHEN"], rows),
    )


async def show_rule(ctx: Context, conn: asyncpg.Connection) -> None:
    rule = await _existing(conn, ctx.args.name)
    ctx.out.result(rule_json(rule), lambda: describe(rule))


async def add_one_rule(ctx: Context, conn: asyncpg.Connection) -> None:
    args = ctx.args
    document = {
        "name": args.name,
        "effect": args.effect,
        "mode": args.mode,
        "enabled": not args.disabled,
        "description": args.description,
        "target": parse_condition_options(args.target, "target"),
        "when": parse_condition_options(args.when, "when"),
    }
    try:
        rule = await add_rule(conn, parse_rule(document), actor=ctx.actor)
    except PolicyError as exc:
        raise UsageError("invalid rule", problems=[str(p) for p in exc.problems]) from None
    ctx.out.result(rule_json(rule), lambda: f"Added rule {rule.name}\n" + describe(rule))
    if rule.mode == "report-only":
        ctx.out.note(f"note: {rule.name} is report-only; enforce it with --mode enforce")


async def remove_one_rule(ctx: Context, conn: asyncpg.Connection) -> None:
    rule = await remove_rule(conn, ctx.args.name, actor=ctx.actor)
    if rule is None:
        raise CommandError(f"no rule {ctx.args.name!r}")
    ctx.out.result({"removed": rule.name}, f"removed rule {rule.name}")


async def change_rule(ctx: Context, conn: asyncpg.Connection) -> None:
    rule = await set_rule_enabled(conn, ctx.args.name, ctx.args.enable, actor=ctx.actor)
    if rule is None:
        raise CommandError(f"no rule {ctx.args.name!r}")
    state = "enabled" if rule.enabled else "disabled"
    ctx.out.result(rule_json(rule), f"rule {rule.name} is {state}")


async def import_rules(ctx: Context, conn: asyncpg.Connection) -> None:
    args = ctx.args
    fmt: Format = args.format or format_of(str(args.file))
    try:
        text = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {args.file}: {exc}") from None
    try:
        rules = parse_policy(text, fmt, str(args.file))
    except PolicyFileError as exc:
        raise UsageError(
            "invalid policy file; nothing was changed", problems=exc.problems
        ) from None
    if args.dry_run:
        current = {r.name: r for r in await load_rules(conn)}
        data = {
            "valid": True,
            "rules": len(rules),
            "added": [r.name for r in rules if r.name not in current],
            "changed": [r.name for r in rules if r.name in current and current[r.name] != r],
            "removed": sorted(set(current) - {r.name for r in rules}),
        }
        ctx.out.result(
            data, lambda: f"{args.file} is valid ({len(rules)} rules); " + _changes(data)
        )
        return
    summary = await replace_rules(conn, rules, actor=ctx.actor)
    data = {
        "rules": len(rules),
        "added": list(summary.added),
        "changed": list(summary.changed),
        "removed": list(summary.removed),
    }
    ctx.out.result(data, lambda: f"imported {len(rules)} rules from {args.file}; " + _changes(data))


def _changes(data: dict[str, Any]) -> str:
    parts = [f"{k} {', '.join(data[k])}" for k in ("added", "changed", "removed") if data[k]]
    return "; ".join(parts) if parts else "no changes"


async def export_rules(ctx: Context, conn: asyncpg.Connection) -> None:
    args = ctx.args
    default: Format = "json" if ctx.out.json else "toml"
    fmt: Format = args.format or (format_of(str(args.file), default) if args.file else default)
    text = dump_policy(await load_rules(conn), fmt)
    if args.file is None:
        print(text, end="", file=ctx.out.stdout or sys.stdout)
        return
    try:
        args.file.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"cannot write {args.file}: {exc}") from None
    ctx.out.note(f"wrote {args.file}")


async def _existing(conn: asyncpg.Connection, name: str) -> Rule:
    rule = await load_rule(conn, name)
    if rule is None:
        raise CommandError(f"no rule {name!r}")
    return rule
