"""Hostile input gets the endpoint's normal 4xx, never a 500.

NUL and lone surrogates cannot be stored by PostgreSQL; deeply nested JSON
would exhaust Python's parser; ``1e400`` is not a number a JWT may carry.
Each is refused where it enters.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import asyncpg
import httpx
import pytest
from joserfc import jws

from backchannel.db.users import User
from tests.conftest import RegisteredClient
from tests.support.ciba import CIBA_GRANT, start_request
from tests.support.device import Phone, b64url, enrolled_phone, enrolment_code, post_jose
from tests.support.jose import assertion_form, client_assertion_claims, ec_key

DEEP = ("[" * 3000 + "]" * 3000).encode()
CLIENT_AUTH_ENDPOINTS = [
    ("/token", {"grant_type": CIBA_GRANT, "auth_req_id": "x"}),
    ("/revoke", {"token": "x"}),
    ("/introspect", {"token": "x"}),
    ("/receipts", {"auth_req_id": "x"}),
    ("/bc-authorize", {"scope": "openid", "login_hint": "alice@example.com"}),
    ("/admin/enrolments", {"subject": "alice"}),
]


def basic(user: str, password: str = "x") -> dict[str, str]:
    raw = f"{user}:{password}".encode("utf-8", "surrogatepass")
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def compact(header: bytes, payload: bytes) -> str:
    """A compact JWS whose signature does not matter: parsing must refuse it first."""
    return f"{b64url(header)}.{b64url(payload)}.{b64url(b'x' * 64)}"


def assert_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error


@pytest.mark.parametrize(("path", "form"), CLIENT_AUTH_ENDPOINTS)
@pytest.mark.parametrize("client_id", ["\x00", "acme\x00", "%00", "\udc80"])
async def test_a_basic_client_id_with_nul_or_a_lone_surrogate_is_invalid_client(
    path: str, form: dict[str, str], client_id: str, http: httpx.AsyncClient
) -> None:
    response = await http.post(path, data=form, headers=basic(client_id))
    assert_error(response, 401, "invalid_client")


@pytest.mark.parametrize(("path", "form"), CLIENT_AUTH_ENDPOINTS)
@pytest.mark.parametrize("credentials", [b"\xe9", b"Zm9v\xff", b"\xc3\xa9OmI="])
async def test_a_basic_header_with_non_ascii_text_is_invalid_client(
    path: str, form: dict[str, str], credentials: bytes, http: httpx.AsyncClient
) -> None:
    response = await http.post(path, data=form, headers={"Authorization": b"Basic " + credentials})
    assert_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"].startswith("Basic")


@pytest.mark.parametrize("sub", ["\x00", "a\ud800b"])
async def test_a_client_assertion_whose_sub_holds_nul_or_a_surrogate_is_invalid_client(
    sub: str, http: httpx.AsyncClient, make_client: Any
) -> None:
    key = ec_key()
    rp = await make_client(
        token_endpoint_auth_method="private_key_jwt",
        jwks={"keys": [key.as_dict(private=False)]},
    )
    claims = client_assertion_claims(rp.client_id, "http://127.0.0.1:8000/token", sub=sub)
    # json.dumps escapes both as \u0000 and \ud800, as an attacker's JSON would.
    payload = json.dumps(claims).encode("ascii")
    assertion = jws.serialize_compact({"alg": "ES256"}, payload, key, algorithms=["ES256"])
    form = {"grant_type": CIBA_GRANT, "auth_req_id": "x", **assertion_form(assertion)}
    assert_error(await http.post("/token", data=form), 401, "invalid_client")


async def test_a_deeply_nested_client_assertion_is_invalid_client(http: httpx.AsyncClient) -> None:
    form = {
        "grant_type": CIBA_GRANT,
        "auth_req_id": "x",
        **assertion_form(compact(DEEP, b"{}")),
    }
    assert_error(await http.post("/token", data=form), 401, "invalid_client")


@pytest.mark.parametrize("part", ["header", "payload"])
async def test_a_deeply_nested_request_object_is_invalid_request(
    part: str, http: httpx.AsyncClient, rp: RegisteredClient, alice: User
) -> None:
    header = json.dumps({"alg": "ES256"}).encode()
    token = compact(DEEP, b"{}") if part == "header" else compact(header, DEEP)
    response = await http.post("/bc-authorize", data={"request": token}, headers=rp.basic_auth())
    assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize("kid", ["\x00", "\ud800"])
async def test_a_device_jws_whose_kid_holds_nul_or_a_surrogate_is_invalid_request(
    kid: str, http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    token = phone.call_jws("/device/requests", header={"kid": kid})
    assert_error(await post_jose(http, "/device/requests", token), 400, "invalid_request")


@pytest.mark.parametrize("claim", ["jti", "code"])
async def test_an_enrolment_with_nul_in_its_jti_or_code_is_invalid_request(
    claim: str, http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    code = await enrolment_code(db, alice.user_id)
    phone = Phone()
    values = {"code": code, "jti": "jti-1", claim: "bad\x00value"}
    token = phone.enrolment_jws(values.pop("code"), **values)
    assert_error(await post_jose(http, "/device/enrol", token), 400, "invalid_request")
    assert await db.fetchval("SELECT count(*) FROM devices") == 0


async def test_a_deeply_nested_device_jws_header_is_invalid_request(
    http: httpx.AsyncClient,
) -> None:
    for path in ("/device/enrol", "/device/requests"):
        response = await post_jose(http, path, compact(DEEP, b"{}"))
        assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize("iat", ["1e400", "-1e400", "1" + "0" * 30])
async def test_an_enrolment_with_a_huge_iat_is_invalid_request(
    iat: str, http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    code = await enrolment_code(db, alice.user_id)
    phone = Phone()
    claims = phone.claims("/device/enrol", code=code, name="x", subscription=phone.subscription)
    claims["iat"] = 0
    payload = json.dumps(claims).replace('"iat": 0', f'"iat": {iat}').encode()
    from tests.support.device import sign_jws

    protected = {"alg": "ES256", "typ": "bc-enrol+jwt", "jwk": phone.public_jwk()}
    token = sign_jws(protected, payload, phone.key)
    assert_error(await post_jose(http, "/device/enrol", token), 400, "invalid_request")


async def test_a_form_with_a_nul_is_invalid_request(
    http: httpx.AsyncClient, rp: RegisteredClient, alice: User
) -> None:
    response = await start_request(http, rp.basic_auth(), binding_message="a\x00b")
    assert_error(response, 400, "invalid_request")
