"""Reading JSON from outside within bounds: depth, size, numbers and storable text."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backchannel.untrusted_json import (
    MAX_DEPTH,
    UntrustedJSON,
    is_storable_text,
    parse_untrusted_json,
)

storable = st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63) + 1, 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | storable,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(storable, children, max_size=4)
    ),
    max_leaves=20,
)


@given(values)
def test_json_within_the_bounds_reads_back_as_written(value: Any) -> None:
    assert parse_untrusted_json(json.dumps(value)) == value


@settings(max_examples=300)
@given(st.text(max_size=300) | st.binary(max_size=300))
def test_any_input_is_a_value_or_untrusted_json_never_another_error(raw: str | bytes) -> None:
    with contextlib.suppress(UntrustedJSON):
        parse_untrusted_json(raw)


@pytest.mark.parametrize("opening", ["[", '{"a":'])
def test_nesting_deeper_than_the_bound_is_refused_without_recursion(opening: str) -> None:
    closing = "]" if opening == "[" else "}"
    assert parse_untrusted_json(opening * MAX_DEPTH + "1" + closing * MAX_DEPTH) is not None
    with pytest.raises(UntrustedJSON, match="nested"):
        parse_untrusted_json(opening * 100_000 + "1" + closing * 100_000, max_bytes=10**7)


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = json.dumps({"s": "[" * 500 + '\\"{' * 100})
    assert parse_untrusted_json(text)["s"].startswith("[[[")


@pytest.mark.parametrize("text", ["1e400", "-1e400", "NaN", "Infinity", str(2**64), "1" * 5000])
def test_numbers_out_of_range_are_refused(text: str) -> None:
    with pytest.raises(UntrustedJSON):
        parse_untrusted_json(f'{{"iat": {text}}}')


@pytest.mark.parametrize("text", ['"\\u0000"', '"a\\ud800"', '{"\\udc00": 1}', '["\\u0000"]'])
def test_nul_and_lone_surrogates_are_refused_in_values_and_keys(text: str) -> None:
    with pytest.raises(UntrustedJSON, match="NUL or a lone surrogate"):
        parse_untrusted_json(text)


def test_a_surrogate_pair_is_ordinary_text() -> None:
    assert parse_untrusted_json('"\\ud83d\\ude00"') == "\U0001f600"


def test_oversized_and_non_utf8_input_is_refused() -> None:
    with pytest.raises(UntrustedJSON, match="longer"):
        parse_untrusted_json(b"[" + b"1," * 40000 + b"1]")
    with pytest.raises(UntrustedJSON, match="UTF-8"):
        parse_untrusted_json(b'"\xff"')


@given(st.text())
def test_storable_text_is_text_utf8_can_encode_without_nul(text: str) -> None:
    try:
        text.encode("utf-8")
        encodable = True
    except UnicodeEncodeError:
        encodable = False
    assert is_storable_text(text) == (encodable and "\x00" not in text)
