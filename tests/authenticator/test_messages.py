"""What the authenticator app signs over, byte for byte: the canonical JSON of the
device API and the user-verification challenge built from it."""

from __future__ import annotations

import hashlib

import pytest

from backchannel.authenticator.messages import (
    MAX_EXACT_INTEGER,
    canonical_json,
    uv_challenge,
    uv_challenge_input,
)


def test_canonical_json_sorts_keys_by_utf16_code_units_as_the_browser_does() -> None:
    # U+FF61 comes before U+1F600 by code point, after it in UTF-16 (D83D DE00).
    assert canonical_json({"\uff61": 1, "\U0001f600": 2}) == '{"\U0001f600":2,"\uff61":1}'
    assert canonical_json({"b": [1, {"d": None, "c": True}], "a": "x"}) == (
        '{"a":"x","b":[1,{"c":true,"d":null}]}'
    )


def test_canonical_json_leaves_non_ascii_text_unescaped() -> None:
    assert canonical_json({"café": "Zoë €"}) == '{"café":"Zoë €"}'
    assert canonical_json(["\U0001f600"]) == '["\U0001f600"]'


def test_canonical_json_carries_integers_within_2_to_the_53_only() -> None:
    assert canonical_json([MAX_EXACT_INTEGER, -MAX_EXACT_INTEGER, 0, False]) == (
        f"[{MAX_EXACT_INTEGER},-{MAX_EXACT_INTEGER},0,false]"
    )
    for too_large in (MAX_EXACT_INTEGER + 1, -MAX_EXACT_INTEGER - 1):
        with pytest.raises(TypeError) as refused:
            canonical_json({"amount": too_large})
        assert str(refused.value) == "canonical JSON carries integers within ±2^53 only"


def test_canonical_json_refuses_floats() -> None:
    with pytest.raises(TypeError) as refused:
        canonical_json({"amount": 1.0})
    assert str(refused.value) == "canonical JSON carries no floats"


def test_the_uv_challenge_covers_the_transaction_in_a_fixed_order() -> None:
    fields = {
        "ref": "ab" * 32,
        "client_id": "acme",
        "client_name": "Acme Coffee",
        "binding_message": None,
        "scope": ["openid", "email"],
        "authorization_details": None,
        "nonce": "n0nce",
    }
    assert uv_challenge_input(**fields) == [
        "backchannel-uv/1",
        "approve",
        "ab" * 32,
        "acme",
        "Acme Coffee",
        "",
        "openid email",
        None,
        "n0nce",
    ]
    details = ({"type": "payment_initiation", "amount": 80},)
    with_details = uv_challenge_input(
        **{**fields, "binding_message": "Pay 80", "authorization_details": details}
    )
    assert with_details[5] == "Pay 80"
    assert with_details[7] == [{"type": "payment_initiation", "amount": 80}]
    expected = hashlib.sha256(
        b'["backchannel-uv/1","approve","' + b"ab" * 32 + b'","acme","Acme Coffee",'
        b'"","openid email",null,"n0nce"]'
    ).digest()
    assert uv_challenge(**fields) == expected
