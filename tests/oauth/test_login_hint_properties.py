"""Properties of login hint parsing: no exception escapes; stored forms read back as themselves."""

from __future__ import annotations

import unicodedata
from urllib.parse import quote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from backchannel.db.users import LoginHint
from backchannel.oauth.login_hint_parsing import (
    HINT_KINDS,
    MAX_ACCOUNT_LENGTH,
    MAX_EMAIL_LENGTH,
    MAX_HINT_LENGTH,
    MAX_USERNAME_LENGTH,
    normalise_hint,
    parse_login_hint,
)
from backchannel.untrusted_json import is_storable_text

PREFIXES = {"email": "email:", "phone": "tel:", "account": "account:", "username": "username:"}
LIMITS = {
    "email": MAX_EMAIL_LENGTH,
    "phone": 16,
    "account": MAX_ACCOUNT_LENGTH,
    "username": MAX_USERNAME_LENGTH,
}

hint_text = st.text(max_size=300) | st.lists(
    st.sampled_from(
        [
            "mailto:",
            "email:",
            "tel:",
            "account:",
            "username:",
            "+44",
            "7700",
            "@",
            ".",
            " ",
            "alice",
            "ÅLICE",
            "e\u0301",
            "%40",
            "?",
            "\u200b",
            "\u202e",
            "\x00",
            "\ud800",
            "(0)",
            "-",
        ]
    ),
    max_size=12,
).map("".join)


def stored_form(kind: str, value: str) -> LoginHint | None:
    try:
        return normalise_hint(kind, value)
    except ValueError:
        return None


@settings(max_examples=500)
@given(hint_text)
def test_any_hint_gives_candidates_in_their_stored_form(hint: str) -> None:
    for candidate in parse_login_hint(hint):
        assert candidate.kind in HINT_KINDS
        assert normalise_hint(candidate.kind, candidate.value) == candidate
        assert is_storable_text(candidate.value)
        assert len(candidate.value) <= LIMITS[candidate.kind]
        assert candidate.value == unicodedata.normalize("NFC", candidate.value)
        assert not any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in candidate.value)


@given(hint_text, st.sampled_from(HINT_KINDS))
def test_normalise_hint_gives_a_hint_or_value_error(value: str, kind: str) -> None:
    hint = stored_form(kind, value)
    if hint is not None:
        assert normalise_hint(kind, hint.value) == hint  # idempotent


@settings(max_examples=300)
@given(hint_text, st.sampled_from(HINT_KINDS))
def test_a_stored_form_typed_with_its_prefix_finds_itself(value: str, kind: str) -> None:
    hint = stored_form(kind, value)
    if hint is not None and len(PREFIXES[kind] + hint.value) <= MAX_HINT_LENGTH:
        assert parse_login_hint(PREFIXES[kind] + hint.value) == [hint]


@given(st.emails())
@example("%00@A.AC")
def test_an_email_address_is_found_bare_and_typed(address: str) -> None:
    hint = stored_form("email", address)
    if hint is not None:
        # A mailto: URI percent-encodes its address (RFC 6068 §2): "%" and "?" included.
        uri = "mailto:" + quote(address, safe="@")
        for written in (address, address.upper(), f" {address} ", "email:" + address, uri):
            if len(written) <= MAX_HINT_LENGTH:
                assert parse_login_hint(written) == [hint], written


def test_a_mailto_hint_is_percent_decoded() -> None:
    assert parse_login_hint("mailto:a%25b@example.com") == [LoginHint("email", "a%b@example.com")]
    assert parse_login_hint("mailto:%00@example.com") == []


@given(st.from_regex(r"\+[1-9][0-9]{7,14}", fullmatch=True), st.sampled_from(["", " ", "-", "."]))
def test_an_international_number_is_found_however_it_is_grouped(number: str, sep: str) -> None:
    grouped = number[:3] + sep + number[3:7] + sep + number[7:]
    assert parse_login_hint(grouped) == [LoginHint("phone", number)]
    assert parse_login_hint("tel:" + grouped) == [LoginHint("phone", number)]


@given(hint_text)
def test_a_hint_over_the_limit_names_nobody(hint: str) -> None:
    assert parse_login_hint("a" * (MAX_HINT_LENGTH + 1) + hint) == []


@pytest.mark.parametrize("kind", ["nickname", "", "EMAIL"])
def test_an_unknown_kind_is_a_value_error(kind: str) -> None:
    with pytest.raises(ValueError, match="unknown login hint kind"):
        normalise_hint(kind, "alice")
