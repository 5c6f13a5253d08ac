"""JSON from outside (JWS headers and payloads, fetched key sets), read within bounds.

Every value that a client, a device or a remote server writes is parsed here
before anything else looks at it, so that it cannot make the server fail:

- at most ``max_bytes`` of text and ``max_depth`` levels of nesting (Python's
  parser would otherwise recurse until it runs out of stack);
- numbers must be finite and fit in 64 bits (``1e400`` is refused, not read
  as infinity; ``NaN`` and ``Infinity`` are not JSON);
- strings, object keys included, must be text PostgreSQL can store: no NUL
  and no lone UTF-16 surrogates (both can be written with ``\\u`` escapes).

A value that breaks a rule raises :class:`UntrustedJSON` (a ``ValueError``)
with a short description that is safe to show.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 20
MAX_INT = 2**63 - 1


class UntrustedJSON(ValueError):
    """The JSON breaks a bound or is not JSON at all."""


def is_storable_text(value: str) -> bool:
    """False for text with NUL or a lone surrogate, which PostgreSQL cannot store."""
    if "\x00" in value:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_untrusted_json(
    raw: bytes | str, *, max_bytes: int = 65536, max_depth: int = MAX_DEPTH
) -> Any:
    """The parsed value, or :class:`UntrustedJSON`."""
    if len(raw) > max_bytes:
        raise UntrustedJSON(f"JSON longer than {max_bytes} bytes")
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UntrustedJSON("JSON that is not UTF-8") from None
    else:
        text = raw
    _check_depth(text, max_depth)
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:  # pragma: no cover - _check_depth bounds the nesting first
        raise UntrustedJSON("JSON nested too deeply") from None
    except ValueError as exc:
        if isinstance(exc, UntrustedJSON):
            raise
        raise UntrustedJSON("not valid JSON") from None
    _check_values(value)
    return value


def _refuse_constant(name: str) -> Any:
    raise UntrustedJSON(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise UntrustedJSON("a JSON number is out of range")
    return number


def _check_depth(text: str, max_depth: int) -> None:
    """Count brackets outside strings, without recursion."""
    if text.count("[") + text.count("{") <= max_depth:
        return
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                raise UntrustedJSON(f"JSON nested deeper than {max_depth} levels")
        elif ch in "]}":
            depth -= 1


def _check_values(value: Any) -> None:
    """Walk the parsed value (iteratively: its depth is already bounded)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not is_storable_text(item):
                raise UntrustedJSON("a JSON string holds NUL or a lone surrogate")
        elif isinstance(item, bool) or item is None or isinstance(item, float):
            continue
        elif isinstance(item, int):
            if abs(item) > MAX_INT:
                raise UntrustedJSON("a JSON number is out of range")
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
