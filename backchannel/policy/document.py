"""Policy files: the whole rule set as TOML or JSON, for review in version control.

    version = 1
    [[rules]]
    name = "retail-via-support-desk"
    effect = "allow"
    mode = "enforce"
    [rules.target]
    groups = ["retail"]
    [rules.when]
    clients = ["support-desk"]

JSON has the same shape: ``{"version": 1, "rules": [{...}]}``. Validation
reports every problem, each with the line it is on where that can be found.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Sequence
from typing import Any, Literal

from backchannel.policy.rules import PolicyError, Problem, Rule, dotted, parse_rules

Format = Literal["toml", "json"]
VERSION = 1
_TOML_RULE = re.compile(r"^\s*\[\[\s*rules\s*\]\]")


class PolicyFileError(ValueError):
    """The file cannot be used; ``problems`` are ready to print, one per line."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid policy file:\n" + "\n".join(self.problems))


def format_of(filename: str, default: Format = "toml") -> Format:
    """The format a file name implies (``.json`` or ``.toml``)."""
    lower = filename.lower()
    if lower.endswith(".json"):
        return "json"
    if lower.endswith(".toml"):
        return "toml"
    return default


def parse_policy(text: str, fmt: Format, source: str = "<policy>") -> tuple[Rule, ...]:
    """The rules a policy file holds; :class:`PolicyFileError` if any part is invalid."""
    document = _decode(text, fmt, source)
    if not isinstance(document, dict):
        raise PolicyFileError([f"{source}: expected a table with a 'rules' list"])
    problems: list[str] = []
    unknown = sorted(set(document) - {"version", "rules"})
    if unknown:
        problems.append(f"{source}: unknown top-level keys {unknown}; expected version, rules")
    if document.get("version", VERSION) != VERSION:
        problems.append(f"{source}: version must be {VERSION}")
    if "rules" not in document:
        # Required even when empty, so that a wrong file cannot silently delete every rule.
        problems.append(f"{source}: missing 'rules' (write rules = [] to remove every rule)")
    if problems:
        raise PolicyFileError(problems)
    try:
        return parse_rules(document["rules"])
    except PolicyError as exc:
        locate = _Locator(text, fmt, document["rules"])
        raise PolicyFileError([locate.describe(source, p) for p in exc.problems]) from None


def _decode(text: str, fmt: Format, source: str) -> Any:
    try:
        return json.loads(text) if fmt == "json" else tomllib.loads(text)
    except json.JSONDecodeError as exc:
        problem = f"{source}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}"
        raise PolicyFileError([problem]) from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyFileError([f"{source}: invalid TOML: {exc}"]) from None


class _Locator:
    """Finds the line a problem path points at, by the rule's span and its keys."""

    def __init__(self, text: str, fmt: Format, rules: object) -> None:
        self.text = text
        self.rules = rules if isinstance(rules, list) else []
        spans = _toml_spans(text) if fmt == "toml" else _json_spans(text)
        self.spans = spans if len(spans) == len(self.rules) else []

    def describe(self, source: str, problem: Problem) -> str:
        line = self.line_of(problem.path)
        where = f"{source}:{line}" if line else source
        name = self._name(problem.path)
        return f"{where}: {dotted(problem.path)}{name}: {problem.message}"

    def line_of(self, path: tuple[str | int, ...]) -> int | None:
        if len(path) < 2 or not isinstance(path[1], int) or not self.spans:
            return None
        start, end = self.spans[path[1]]
        position = start
        for key in path[2:]:
            if not isinstance(key, str):
                continue
            found = re.compile(rf'(?<![\w-])"?{re.escape(key)}"?\s*[=:\].]').search(
                self.text, position, end
            )
            if found:
                position = found.start()
        return self.text.count("\n", 0, position) + 1

    def _name(self, path: tuple[str | int, ...]) -> str:
        if len(path) >= 2 and isinstance(path[1], int) and path[1] < len(self.rules):
            rule = self.rules[path[1]]
            if isinstance(rule, dict) and isinstance(rule.get("name"), str):
                return f" ({rule['name']})"
        return ""


def _toml_spans(text: str) -> list[tuple[int, int]]:
    starts = [m.start() for m in re.finditer(_TOML_RULE.pattern, text, re.MULTILINE)]
    return list(zip(starts, [*starts[1:], len(text)], strict=True))


def _json_spans(text: str) -> list[tuple[int, int]]:
    """Offsets of each element of the top-level ``rules`` array."""
    spans: list[tuple[int, int]] = []
    depth, index, last_string = 0, 0, ""
    array_depth: int | None = None
    start: int | None = None
    while index < len(text):
        char = text[index]
        if char == '"':
            end = index + 1
            while end < len(text) and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            last_string = text[index + 1 : end]
            if array_depth is not None and depth == array_depth and start is None:
                start = index
            index = end + 1
            continue
        if char in "[{":
            depth += 1
            if char == "[" and depth == 2 and array_depth is None and last_string == "rules":
                array_depth = 2
            elif array_depth is not None and depth == array_depth + 1 and start is None:
                start = index
        elif char in "]}":
            if array_depth is not None and depth == array_depth:
                if start is not None:
                    spans.append((start, index))
                return spans
            depth -= 1
        elif char == "," and array_depth is not None and depth == array_depth:
            if start is not None:
                spans.append((start, index))
            start = None
        elif not char.isspace() and array_depth is not None and depth == array_depth:
            start = index if start is None else start
        index += 1
    return spans


def dump_policy(rules: Sequence[Rule], fmt: Format) -> str:
    """The rules as a policy file that :func:`parse_policy` reads back unchanged."""
    ordered = sorted(rules, key=lambda r: r.name)
    if fmt == "json":
        document = {"version": VERSION, "rules": [r.to_json() for r in ordered]}
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    lines = [
        "# backchannel policy (docs/policy.md): backchannel policy import FILE",
        f"version = {VERSION}",
    ]
    if not ordered:
        lines.append("rules = []")
    for rule in ordered:
        data = rule.to_json()
        lines += ["", "[[rules]]"]
        lines += [f"{k} = {_toml(v)}" for k, v in data.items() if not isinstance(v, dict)]
        for section in ("target", "when"):
            if section in data:
                lines += ["", f"[rules.{section}]"]
                lines += [f"{k} = {_toml(v)}" for k, v in data[section].items()]
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string once DEL, which TOML forbids raw, is escaped.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
