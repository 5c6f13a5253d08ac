"""HTML built from templates whose values are escaped unless they already are HTML.

``html(template, **values)`` fills ``{name}`` fields with ``str.format``: a value
of type :class:`Html` goes in as it is, anything else is escaped (quotes too,
so it is safe inside attribute values). Templates hold no braces of their own.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape


class Html(str):
    """Text that is already HTML."""

    __slots__ = ()


def html(template: str, /, **values: object) -> Html:
    return Html(
        template.format(
            **{
                name: value if isinstance(value, Html) else escape(str(value), quote=True)
                for name, value in values.items()
            }
        )
    )


def join(parts: Iterable[Html]) -> Html:
    return Html("".join(parts))


def attribute_if(condition: bool, name: str) -> Html:
    """A boolean attribute (`` hidden``, `` disabled``) when ``condition`` holds."""
    return Html(f" {escape(name)}") if condition else Html("")
