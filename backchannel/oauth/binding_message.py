"""Whether a binding_message can be shown honestly on the phone (CIBA §7.1).

Ordinary Unicode (emoji, CJK, accents, spaces) is accepted. Refused: control
characters, surrogates, private-use characters, line/paragraph separators,
and bidirectional overrides/isolates, which can make a message read
differently from what the relying party sent ("Pay 80" shown as "08 yaP").
"""

from __future__ import annotations

import unicodedata

from backchannel.errors import InvalidBindingMessage

_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Co", "Zl", "Zp"})
_BIDI_CONTROLS = frozenset(
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
)


def undisplayable_character(text: str) -> str | None:
    """The first character of ``text`` that cannot be shown honestly, or None."""
    if text.isascii() and text.isprintable():  # no control or bidi characters possible
        return None
    for char in text:
        if char in _BIDI_CONTROLS or unicodedata.category(char) in _REFUSED_CATEGORIES:
            return char
    return None


def check_binding_message(value: object, max_length: int) -> str:
    """Return the message unchanged if it can be displayed; raise otherwise."""
    if not isinstance(value, str):
        raise InvalidBindingMessage("binding_message must be a string")
    if not value.strip():
        raise InvalidBindingMessage("binding_message is blank")
    if len(value) > max_length:
        raise InvalidBindingMessage(f"binding_message is longer than {max_length} characters")
    char = undisplayable_character(value)
    if char is not None:
        raise InvalidBindingMessage(
            f"binding_message contains a character that cannot be displayed (U+{ord(char):04X})"
        )
    return value
