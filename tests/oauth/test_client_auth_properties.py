"""Properties of ``parse_basic_credentials``: any header is read or refused as invalid_client."""

from __future__ import annotations

import base64
from urllib.parse import quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backchannel.errors import InvalidClient
from backchannel.oauth.client_auth import parse_basic_credentials

# What a client id or secret may hold: any text UTF-8 can encode, no NUL, not empty.
credential = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1)


def basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode("ascii")


@settings(max_examples=500)
@given(
    st.text(max_size=60)
    | st.binary(max_size=60).map(basic)
    | st.text(st.characters(codec="latin-1"), max_size=40).map("Basic ".__add__)
)
def test_any_authorization_header_is_read_or_refused_as_invalid_client(header: str) -> None:
    try:
        client_id, secret = parse_basic_credentials(header)
    except InvalidClient:
        return
    assert client_id and secret
    assert "\x00" not in client_id + secret


@given(credential, credential)
def test_form_encoded_credentials_read_back_as_written(client_id: str, secret: str) -> None:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode("ascii")
    assert parse_basic_credentials(basic(raw)) == (client_id, secret)


@given(
    st.from_regex(r"[A-Za-z0-9._~-]{1,40}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9._~-]{1,40}", fullmatch=True),
)
def test_plain_credentials_need_no_encoding(client_id: str, secret: str) -> None:
    header = f"  basic   {base64.b64encode(f'{client_id}:{secret}'.encode()).decode()} "
    assert parse_basic_credentials(header) == (client_id, secret)


@given(st.text(st.characters(codec="latin-1", min_codepoint=0x80), min_size=1, max_size=10))
def test_a_header_with_non_ascii_text_is_invalid_client(text: str) -> None:
    with pytest.raises(InvalidClient):
        parse_basic_credentials("Basic " + text)


@pytest.mark.parametrize(
    "raw", [b"no-colon", b":secret", b"client:", b"%00:x", b"x:%00", b"%FF:x", b"\xff:x"]
)
def test_malformed_credentials_are_invalid_client(raw: bytes) -> None:
    with pytest.raises(InvalidClient):
        parse_basic_credentials(basic(raw))
