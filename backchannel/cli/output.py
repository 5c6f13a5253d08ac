"""What every command shares: its context, its output, and its failures.

Results go to stdout, as JSON with ``--json`` and as text otherwise; notes and
errors go to stderr, so that ``--json`` output can always be parsed.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from backchannel.settings import Settings

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """A command cannot go on; ``exit_code`` 2 for bad input, 1 otherwise."""

    def __init__(
        self, message: str, *, exit_code: int = EXIT_FAILURE, problems: Sequence[str] = ()
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.problems = list(problems)


class UsageError(CommandError):
    def __init__(self, message: str, *, problems: Sequence[str] = ()) -> None:
        super().__init__(message, exit_code=EXIT_USAGE, problems=problems)


@dataclass
class Output:
    json: bool
    stdout: TextIO | None = None
    stderr: TextIO | None = None

    def _out(self) -> TextIO:
        return self.stdout or sys.stdout

    def _err(self) -> TextIO:
        return self.stderr or sys.stderr

    def result(self, data: Any, text: str | Callable[[], str]) -> None:
        """Print a command's result: ``data`` as JSON, or ``text`` for a person."""
        if self.json:
            print(json.dumps(data, indent=2, default=str), file=self._out())
        else:
            print(text() if callable(text) else text, file=self._out())

    def text(self, message: str) -> None:
        """Human-only output (banners, hints); nothing with ``--json``."""
        if not self.json:
            print(message, file=self._out())

    def note(self, message: str) -> None:
        print(message, file=self._err())

    def error(self, message: str, problems: Sequence[str] = ()) -> None:
        lines = [f"error: {message}", *(f"  - {p}" for p in problems)]
        print("\n".join(lines), file=self._err())


@dataclass
class Context:
    args: argparse.Namespace
    settings: Settings
    out: Output

    @property
    def actor(self) -> str:
        """Who made a change, for the audit trail: the command line and the OS user."""
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no name for this uid (a container, say)
            user = str(os.getuid())
        return f"cli:{user}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain left-aligned text table."""
    if not rows:
        return "(none)"
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=True)]
    lines = [
        "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (headers, *rows)
    ]
    return "\n".join(lines)


def fields(pairs: Sequence[tuple[str, Any]]) -> str:
    """``name: value`` lines, aligned."""
    width = max(len(name) for name, _ in pairs) + 1
    return "\n".join(f"{(name + ':').ljust(width)} {_show(value)}" for name, value in pairs)


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)
