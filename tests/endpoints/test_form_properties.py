"""Properties of ``parse_form``: only ``invalid_request`` ever escapes, and forms read back."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backchannel.endpoints.forms import MAX_FIELDS, parse_form
from backchannel.errors import InvalidRequest
from backchannel.untrusted_json import is_storable_text

# Text a form may carry: anything UTF-8 can encode, except NUL.
form_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)
form_fields = st.dictionaries(form_text, form_text.filter(bool), max_size=MAX_FIELDS)
# Bodies as attackers write them: form syntax, escapes (broken ones too), and raw bytes.
form_bytes = st.lists(
    st.sampled_from(
        [b"a", b"=", b"&", b"+", b"%", b"%00", b"%C3%A9", b"%ED%A0%80", b"%FF", b"\xff"]
    )
    | st.binary(max_size=5),
    max_size=40,
).map(b"".join)


def read(body: bytes) -> dict[str, str] | None:
    """The form, or None when it is refused with ``invalid_request`` (nothing else may escape)."""
    try:
        return parse_form(body)
    except InvalidRequest:
        return None


@settings(max_examples=500)
@given(form_bytes | st.binary(max_size=200))
def test_any_body_is_read_or_refused_as_invalid_request(body: bytes) -> None:
    form = read(body)
    if form is not None:
        for name, value in form.items():
            assert value != "", "an empty value counts as absent"
            assert is_storable_text(name) and is_storable_text(value), (name, value)


@given(form_fields)
def test_an_encoded_form_reads_back_as_written(fields: dict[str, str]) -> None:
    assert parse_form(urlencode(fields).encode("ascii")) == fields


@given(form_fields)
def test_empty_values_are_absent(fields: dict[str, str]) -> None:
    blanks = {f"blank{i}": "" for i in range(min(3, MAX_FIELDS - len(fields)))}
    assert parse_form(urlencode({**fields, **blanks}).encode("ascii")) == {
        k: v for k, v in fields.items() if k not in blanks
    }


@settings(max_examples=300)
@given(form_bytes)
def test_a_form_reads_as_the_standard_library_reads_it(body: bytes) -> None:
    form = read(body)
    if form is not None:
        pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, errors="strict")
        assert form == {name: value for name, value in pairs if value}


@given(form_fields.filter(bool), st.data())
def test_a_repeated_parameter_is_invalid_request(
    fields: dict[str, str], data: st.DataObject
) -> None:
    name = data.draw(st.sampled_from(sorted(fields)))
    body = urlencode(fields) + "&" + urlencode({name: "again"})
    with pytest.raises(InvalidRequest, match="more than once"):
        parse_form(body.encode("ascii"))


@given(form_text, form_text, st.booleans())
def test_nul_in_a_name_or_a_value_is_invalid_request(text: str, more: str, in_name: bool) -> None:
    with_nul = text + "\x00" + more
    fields = {with_nul: "x"} if in_name else {"name": with_nul}
    with pytest.raises(InvalidRequest):
        parse_form(urlencode(fields).encode("ascii"))


def test_more_fields_than_the_limit_are_invalid_request() -> None:
    body = "&".join(f"f{i}=x" for i in range(MAX_FIELDS + 1))
    with pytest.raises(InvalidRequest, match="form fields"):
        parse_form(body.encode("ascii"))
