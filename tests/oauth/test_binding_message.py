import pytest

from backchannel.errors import InvalidBindingMessage
from backchannel.oauth.binding_message import check_binding_message


@pytest.mark.parametrize(
    "message",
    [
        "Pay 80 EUR at Acme Coffee?",
        "Agent 42 asks to reset your password",
        "支払い 8000 円 — アクメ珈琲 ☕",
        "👨‍👩‍👧 family plan 🎉 confirm?",
        "Überweisung an Müller GmbH",
    ],
)
def test_ordinary_unicode_is_accepted_unchanged(message: str) -> None:
    assert check_binding_message(message, 128) == message


@pytest.mark.parametrize(
    "message",
    ["line one\nline two", "tab\there", "bell\x07", "nul\x00", "esc\x1b[31m"],
)
def test_control_characters_are_refused(message: str) -> None:
    with pytest.raises(InvalidBindingMessage):
        check_binding_message(message, 128)


def test_bidirectional_override_that_reverses_text_is_refused() -> None:
    with pytest.raises(InvalidBindingMessage, match="U\\+202E"):
        check_binding_message("Pay \u202e08 RUE", 128)


def test_message_over_the_configured_length_is_refused() -> None:
    check_binding_message("x" * 20, 20)
    with pytest.raises(InvalidBindingMessage, match="longer than 20"):
        check_binding_message("x" * 21, 20)


def test_blank_message_is_refused() -> None:
    with pytest.raises(InvalidBindingMessage):
        check_binding_message("   ", 20)


def test_non_string_message_is_refused() -> None:
    with pytest.raises(InvalidBindingMessage):
        check_binding_message(42, 20)
