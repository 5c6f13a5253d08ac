"""The panel's small parts on their own: caller identifiers, binding messages, markup,
sessions."""

from __future__ import annotations

import pytest

from examples.call_centre.binding import CODE_ALPHABET, binding_message, readback_code
from examples.call_centre.caller import parse_caller
from examples.call_centre.markup import Html, html
from examples.call_centre.sessions import SessionStore


@pytest.mark.parametrize(
    ("typed", "hint"),
    [
        (" Alice@Example.COM ", "email:alice@example.com"),
        ("+44 (0)7700 900-123", "tel:+447700900123"),
        ("12345678", "account:12345678"),
        ("AC-2024.17", "account:AC-2024.17"),
    ],
)
def test_what_the_agent_types_becomes_a_typed_login_hint(typed: str, hint: str) -> None:
    assert parse_caller(typed).login_hint == hint


@pytest.mark.parametrize("typed", ["", "alice@", "@example.com", "+1234", "a b", "x\u202ey", "-1"])
def test_what_is_no_identifier_is_refused(typed: str) -> None:
    with pytest.raises(ValueError):
        parse_caller(typed)


def test_the_binding_message_names_the_agent_the_reason_and_a_code_easy_to_read_aloud() -> None:
    codes = {readback_code() for _ in range(200)}
    assert all(len(code) == 4 and set(code) <= set(CODE_ALPHABET) for code in codes)
    assert not set("0O1IL2Z5S8B") & set(CODE_ALPHABET)
    assert len(codes) > 150
    assert binding_message("Agent 42", "password-reset", "K7Q2") == (
        "Agent 42: password reset, code K7Q2"
    )
    assert len(binding_message("x" * 40, "change-of-address", "K7Q2")) <= 128


def test_markup_escapes_every_value_but_markup() -> None:
    made = html('<a title="{t}">{b}</a>', t='"><script>', b=Html("<b>ok</b>"))
    assert made == '<a title="&quot;&gt;&lt;script&gt;"><b>ok</b></a>'


def test_a_session_ends_when_idle_or_old_and_an_ended_one_stays_ended() -> None:
    now = [0.0]
    store = SessionStore(idle=60, lifetime=600, secure=False, clock=lambda: now[0])
    idle, busy, ended = store.start(), store.start(), store.start()
    store.end(ended)
    assert not store.is_live(ended)
    for _ in range(11):
        now[0] += 50
        assert store.is_live(busy)
        busy.seen = now[0]  # a request, as SessionStore.of records it
    assert not store.is_live(idle)
    now[0] = 601
    assert not store.is_live(busy)  # over 600 s since it started, however busy
