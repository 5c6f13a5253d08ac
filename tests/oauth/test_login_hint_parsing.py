"""Parsing and normalising login_hint values (no database)."""

from __future__ import annotations

import pytest

from backchannel.db.users import LoginHint
from backchannel.oauth.login_hint_parsing import normalise_hint, parse_login_hint

EMAIL = LoginHint("email", "alice@example.com")
PHONE = LoginHint("phone", "+447700900123")


@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        ("mailto:alice@example.com", [EMAIL]),
        ("MAILTO:Alice@Example.COM", [EMAIL]),
        ("mailto:alice%40example.com", [EMAIL]),
        ("email:alice@example.com", [EMAIL]),
        ("tel:+44 7700 900123", [PHONE]),
        ("tel:+44-7700-900.123", [PHONE]),
        ("tel:+44 (0)7700 900123", [PHONE]),
        ("account:12345678", [LoginHint("account", "12345678")]),
        ("account:ACC-42", [LoginHint("account", "acc-42")]),
        ("username:Alice", [LoginHint("username", "alice")]),
    ],
)
def test_typed_hints_name_their_kind(hint: str, expected: list[LoginHint]) -> None:
    assert parse_login_hint(hint) == expected


@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        ("alice@example.com", [EMAIL]),
        ("  Alice@Example.com ", [EMAIL]),
        ("+447700900123", [PHONE]),
        ("+44 7700 900123", [PHONE]),
        ("+44 (7700) 900-123", [PHONE]),
        ("12345678", [LoginHint("account", "12345678"), LoginHint("username", "12345678")]),
        ("alice", [LoginHint("username", "alice")]),
        ("ALICE", [LoginHint("username", "alice")]),
        ("Ålice", [LoginHint("username", "ålice")]),
    ],
)
def test_untyped_hints_are_read_by_their_shape(hint: str, expected: list[LoginHint]) -> None:
    assert parse_login_hint(hint) == expected


def test_username_is_unicode_normalised() -> None:
    decomposed = "A\u030alice"  # A + combining ring above
    assert parse_login_hint(decomposed) == [LoginHint("username", "ålice")]


@pytest.mark.parametrize(
    "hint",
    [
        "",
        "   ",
        "alice\x00",
        "ali\u200bce",  # zero-width space
        "alice\nbob",
        "a" * 257,
        "tel:+44",  # too short for E.164
        "tel:+1234567890123456",  # too long for E.164
        "tel:07700900123",  # no country code
        "tel:+44 7700 900123;ext=1",
        "mailto:alice@example.com?subject=hi",
        "mailto:",
        "email:not-an-email",
        "email:alice@@example.com",
        "alice@",
        "@example.com",
        "alice@example..com",
        "account:has space",
        "username:",
        "alice smith",
    ],
)
def test_unusable_hints_give_no_candidates(hint: str) -> None:
    assert parse_login_hint(hint) == []


def test_hint_of_256_characters_is_still_read() -> None:
    name = "a" * 64
    assert parse_login_hint(" " * 192 + name) == [LoginHint("username", name)]


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("email", " Alice@Example.com ", "alice@example.com"),
        ("phone", "+44 7700 900123", "+447700900123"),
        ("account", "12345678", "12345678"),
        ("username", "Alice", "alice"),
    ],
)
def test_normalise_hint_gives_the_stored_form(kind: str, value: str, expected: str) -> None:
    assert normalise_hint(kind, value) == LoginHint(kind, expected)


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        ("email", "alice", "name@domain"),
        ("phone", "07700 900123", "international"),
        ("account", "a b", "account"),
        ("username", "alice smith", "spaces"),
        ("username", "", "empty"),
        ("username", "bad\x07", "control"),
        ("nickname", "alice", "unknown login hint kind"),
    ],
)
def test_normalise_hint_explains_invalid_values(kind: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalise_hint(kind, value)


@pytest.mark.parametrize(
    ("kind", "value"),
    [("email", "Alice@Example.com"), ("phone", "+44 7700 900123"), ("username", "ALICE")],
)
def test_provisioned_and_presented_forms_compare_equal(kind: str, value: str) -> None:
    assert normalise_hint(kind, value) in parse_login_hint(value)
