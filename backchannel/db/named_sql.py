"""SQL with named parameters (``:name``), compiled once to asyncpg's positional ``$n``.

A statement with many parameters reads better, and is called with less room
for a swapped argument, when each parameter has a name. ``::type`` casts and
colons inside words are left alone; a name used twice is one parameter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_NAME = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")


class NamedSQL:
    def __init__(self, text: str) -> None:
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in names:
                names.append(name)
            return f"${names.index(name) + 1}"

        self.sql = _NAME.sub(number, text)
        self.names: tuple[str, ...] = tuple(names)
        self._expected = frozenset(names)

    def args(self, values: Mapping[str, object]) -> tuple[object, ...]:
        """The positional arguments; every name must have a value, and nothing else may."""
        if values.keys() != self._expected:
            missing = sorted(self._expected - values.keys())
            extra = sorted(values.keys() - self._expected)
            raise TypeError(f"parameters missing {missing}, unexpected {extra}")
        return tuple(values[name] for name in self.names)
