"""Properties of the JWT readers: only ``JWTRejected`` escapes; what is read is what was sent."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backchannel.oauth.jwt_claims import (
    JWTRejected,
    check_audience,
    check_times,
    number_claim,
    peek_claims,
    read_header,
)

storable = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63) + 1, 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | storable,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(storable, inner, max_size=3),
    max_leaves=8,
)
# Anything a caller can put in a claim, including what JSON cannot hold.
any_values = (
    json_values
    | st.integers()
    | st.integers(10**300, 10**400).flatmap(lambda n: st.sampled_from([n, -n]))
    | st.floats()
    | st.binary(max_size=4)
    | st.tuples(st.integers())
)
objects = st.dictionaries(storable, json_values, max_size=5)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def compact(header: Any, payload: Any, signature: bytes = b"sig") -> str:
    return ".".join(
        (b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(signature))
    )


segments = st.text(st.sampled_from("AZaz09-_=.+/ é\x00"), max_size=30) | st.builds(
    compact, json_values, json_values
)


def rejected_or(call: Any, *args: Any, **kwargs: Any) -> Any:
    """The result, or None when the call raised JWTRejected (nothing else may escape)."""
    try:
        return call(*args, **kwargs)
    except JWTRejected:
        return None


def accepts(call: Any, *args: Any, **kwargs: Any) -> bool:
    """Whether a check passed; False when it raised JWTRejected (nothing else may escape)."""
    try:
        call(*args, **kwargs)
    except JWTRejected:
        return False
    return True


@settings(max_examples=400)
@given(segments | st.text(max_size=80))
def test_any_token_text_is_read_or_rejected(token: str) -> None:
    header = rejected_or(read_header, token)
    if header is not None:
        assert isinstance(header, dict) and isinstance(header["alg"], str)
    claims = rejected_or(peek_claims, token)
    assert claims is None or isinstance(claims, dict)


@given(
    objects, st.text(st.characters(codec="ascii", exclude_characters="\x00"), min_size=1), objects
)
def test_a_compact_jws_reads_back_its_header_and_claims(
    header: dict[str, Any], alg: str, claims: dict[str, Any]
) -> None:
    token = compact({**header, "alg": alg}, claims)
    assert read_header(token) == {**header, "alg": alg}
    assert peek_claims(token) == claims


@given(objects, objects)
def test_an_encrypted_jwt_is_rejected(header: dict[str, Any], claims: dict[str, Any]) -> None:
    with pytest.raises(JWTRejected, match="encrypted"):
        read_header(compact({**header, "alg": "RSA-OAEP"}, claims) + ".iv.tag")


@given(any_values, st.booleans())
def test_number_claim_gives_a_finite_float_or_rejects(value: Any, required: bool) -> None:
    read = rejected_or(number_claim, {"n": value}, "n", required=required)
    if read is not None:
        assert isinstance(read, float) and math.isfinite(read)
        assert read == float(value) and not isinstance(value, bool)


@given(st.booleans())
def test_a_missing_number_claim_is_none_unless_required(required: bool) -> None:
    if required:
        with pytest.raises(JWTRejected, match="required"):
            number_claim({}, "exp", required=True)
    else:
        assert number_claim({}, "exp", required=False) is None


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(["exp", "nbf", "iat"]), any_values), st.floats(0, 2e9))
def test_check_times_accepts_or_rejects_any_claims(claims: dict[str, Any], now: float) -> None:
    accepts(check_times, claims, skew=10, now=now, require=(), max_lifetime=3600, max_ahead=3600)


finite = st.floats(-1e12, 1e12, allow_nan=False)


@given(finite, finite, st.integers(0, 300))
def test_exp_is_rejected_exactly_when_it_lies_skew_seconds_in_the_past(
    exp: float, now: float, skew: int
) -> None:
    if now >= exp + skew:
        with pytest.raises(JWTRejected, match="expired"):
            check_times({"exp": exp}, skew=skew, now=now)
    else:
        check_times({"exp": exp}, skew=skew, now=now)


@given(finite, finite, st.integers(0, 300), st.sampled_from(["nbf", "iat"]))
def test_nbf_and_iat_are_rejected_exactly_when_they_lie_skew_seconds_ahead(
    moment: float, now: float, skew: int, name: str
) -> None:
    claims = {name: moment}
    if moment > now + skew:
        with pytest.raises(JWTRejected):
            check_times(claims, skew=skew, now=now, require=())
    else:
        check_times(claims, skew=skew, now=now, require=())


@given(st.integers(0, 2**40), st.integers(1, 10**6), st.integers(2, 10**6))
def test_a_lifetime_over_the_limit_is_rejected(start: int, limit: int, lifetime: int) -> None:
    claims = {"nbf": start, "exp": start + lifetime}
    now = start + lifetime / 2
    accepted = accepts(check_times, claims, skew=0, now=now, max_lifetime=limit)
    assert accepted == (claims["exp"] - start <= limit)


accepted_sets = st.frozensets(storable, max_size=4)


@given(any_values, accepted_sets)
def test_check_audience_accepts_exactly_an_aud_that_names_an_accepted_value(
    aud: Any, accepted: frozenset[str]
) -> None:
    values = [aud] if isinstance(aud, str) else aud
    names = isinstance(values, list) and any(isinstance(v, str) and v in accepted for v in values)
    assert accepts(check_audience, {"aud": aud}, accepted) == names


@given(accepted_sets.filter(bool), st.data())
def test_an_aud_naming_an_accepted_value_is_accepted_alone_or_in_a_list(
    accepted: frozenset[str], data: st.DataObject
) -> None:
    name = data.draw(st.sampled_from(sorted(accepted)))
    others = data.draw(st.lists(json_values, max_size=3))
    check_audience({"aud": name}, accepted)
    check_audience({"aud": [*others, name]}, accepted)


@given(st.one_of(st.none(), st.just([]), st.integers(), st.dictionaries(storable, storable)))
def test_a_missing_or_empty_aud_is_rejected(aud: Any) -> None:
    with pytest.raises(JWTRejected):
        check_audience({} if aud is None else {"aud": aud}, {"https://op.example"})
