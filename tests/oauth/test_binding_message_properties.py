"""Properties of binding messages: refused only as invalid_binding_message; accepted means shown."""

from __future__ import annotations

import unicodedata
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from backchannel.errors import InvalidBindingMessage
from backchannel.oauth.binding_message import check_binding_message

BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
NOT_DISPLAYABLE = {"Cc", "Cs", "Co", "Zl", "Zp"}
limits = st.integers(1, 300)
# Letters, marks, numbers, punctuation, symbols and spaces of every script: what people write.
ordinary = st.characters(
    categories=["L", "M", "N", "P", "S", "Zs"], exclude_characters="".join(BIDI_CONTROLS)
)
messages = (
    st.text(max_size=320)
    | st.text(ordinary, max_size=200)
    | st.lists(
        st.sampled_from(
            ["Pay 80 EUR", " ", "🙂", "注文", "\u202e", "\u2066", "\x00", "\n", "\ud800", "\ue000"]
        ),
        max_size=10,
    ).map("".join)
)


def accepted(value: Any, limit: int) -> str | None:
    try:
        return check_binding_message(value, limit)
    except InvalidBindingMessage:
        return None


@settings(max_examples=500)
@given(messages | st.integers() | st.none() | st.lists(st.text()), limits)
def test_an_accepted_message_can_be_displayed_as_sent(value: Any, limit: int) -> None:
    shown = accepted(value, limit)
    if shown is not None:
        assert shown == value
        assert shown.strip() and len(shown) <= limit
        for char in shown:
            assert char not in BIDI_CONTROLS, f"U+{ord(char):04X}"
            assert unicodedata.category(char) not in NOT_DISPLAYABLE, f"U+{ord(char):04X}"


@given(st.text(ordinary, min_size=1, max_size=128).filter(str.strip))
def test_ordinary_text_of_any_script_is_accepted_unchanged(message: str) -> None:
    assert check_binding_message(message, 128) == message


@given(
    st.text(ordinary, max_size=50),
    st.sampled_from([*sorted(BIDI_CONTROLS), "\x07", "\u2028", "\ue000"]),
)
def test_one_undisplayable_character_anywhere_refuses_the_message(text: str, bad: str) -> None:
    for message in (bad + text, text + bad, text[: len(text) // 2] + bad + text[len(text) // 2 :]):
        assert accepted(message + "x", 200) is None


@given(st.text(ordinary, min_size=1, max_size=50).filter(str.strip), limits)
def test_a_message_longer_than_the_limit_is_refused(text: str, limit: int) -> None:
    message = (text * (limit // len(text) + 2))[: limit + 1]
    assert accepted(message, limit) is None
