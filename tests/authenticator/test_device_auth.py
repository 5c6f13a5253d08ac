"""Device-signed calls: what makes a call count, and that nothing malformed becomes a 500."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import asyncpg
import httpx
import pytest

from backchannel.db.users import User
from tests.support.device import JOSE, Phone, enrolled_phone, post_jose, sign_jws

PATH = "/device/requests"


def _error(response: httpx.Response) -> str:
    error: str = response.json()["error"]
    return error


async def test_a_signed_call_is_accepted_and_updates_last_seen(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    await db.execute("UPDATE devices SET last_seen_at = now() - interval '1 day'")
    response = await phone.call(http, PATH)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    seen = await db.fetchval(
        "SELECT now() - last_seen_at < interval '1 minute' FROM devices WHERE device_id = $1",
        phone.device_id,
    )
    assert seen is True


async def test_the_host_header_does_not_decide_the_expected_url(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    spoofed = {**JOSE, "Host": "evil.example"}
    ok = await http.post(PATH, content=phone.call_jws(PATH), headers=spoofed)
    assert ok.status_code == 200, ok.text
    token = phone.call_jws(PATH, htu="http://evil.example" + PATH)
    refused = await http.post(PATH, content=token, headers=spoofed)
    assert refused.status_code == 401


async def test_a_replayed_jti_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    token = phone.call_jws(PATH)
    assert (await post_jose(http, PATH, token)).status_code == 200
    replay = await post_jose(http, PATH, token)
    assert replay.status_code == 401
    assert _error(replay) == "invalid_token"
    # The same jti in a freshly signed call is a replay too.
    jti = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["jti"]
    again = await phone.call(http, PATH, jti=jti)
    assert again.status_code == 401


@pytest.mark.parametrize(
    "claims",
    [
        {"htu": "http://127.0.0.1:8000/device/history"},
        {"htu": "https://evil.example/device/requests"},
        {"htu": "http://127.0.0.1:8000/device/requests/"},
        {"htm": "GET"},
    ],
    ids=["other-path", "other-host", "trailing-slash", "other-method"],
)
async def test_a_call_signed_for_another_url_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User, claims: dict[str, Any]
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    response = await phone.call(http, PATH, **claims)
    assert response.status_code == 401
    assert _error(response) == "invalid_token"


@pytest.mark.parametrize("offset", [-3600, -121, 121, 3600])
async def test_a_stale_or_future_iat_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User, offset: int
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    response = await phone.call(http, PATH, iat=int(time.time()) + offset)
    assert response.status_code == 401


async def test_a_slightly_skewed_iat_is_accepted(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    assert (await phone.call(http, PATH, iat=int(time.time()) - 30)).status_code == 200
    assert (await phone.call(http, PATH, iat=int(time.time()) + 30)).status_code == 200


async def test_an_unknown_kid_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    response = await post_jose(http, PATH, phone.call_jws(PATH, header={"kid": "no-such-device"}))
    assert response.status_code == 401


async def test_a_call_signed_by_another_key_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    other = await enrolled_phone(http, db, alice.user_id, name="Other")
    assert other.device_id != phone.device_id
    # Signed with the other phone's key but naming this phone.
    impostor = Phone(key=other.key, device_id=phone.device_id)
    response = await impostor.call(http, PATH)
    assert response.status_code == 401
    assert _error(response) == "invalid_token"


async def test_a_removed_device_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    await db.execute("UPDATE devices SET removed_at = now() WHERE device_id = $1", phone.device_id)
    response = await phone.call(http, PATH)
    assert response.status_code == 401


@pytest.mark.parametrize(
    "header",
    [
        {"typ": "bc-enrol+jwt"},
        {"typ": "JWT"},
        {"typ": None},
        {"kid": None},
        {"kid": 42},
        {"alg": "ES384"},
        {"alg": "HS256"},
        {"alg": "none"},
        {"crit": ["exp"]},
    ],
)
async def test_a_header_other_than_the_contract_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User, header: dict[str, Any]
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    protected = {"alg": "ES256", "typ": "bc-device+jwt", "kid": phone.device_id, **header}
    protected = {k: v for k, v in protected.items() if v is not None}
    token = sign_jws(protected, phone.claims(PATH), phone.key)
    response = await post_jose(http, PATH, token)
    assert response.status_code == 400
    assert _error(response) == "invalid_request"


@pytest.mark.parametrize(
    "claims",
    [
        {"htm": None},
        {"htu": None},
        {"iat": None},
        {"iat": "now"},
        {"iat": True},
        {"jti": None},
        {"jti": ""},
        {"jti": 7},
        {"jti": "x" * 300},
    ],
)
async def test_missing_or_mistyped_claims_are_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User, claims: dict[str, Any]
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    body = phone.claims(PATH)
    for name, value in claims.items():
        body.pop(name)
        if value is not None:
            body[name] = value
    token = sign_jws(
        {"alg": "ES256", "typ": "bc-device+jwt", "kid": phone.device_id}, body, phone.key
    )
    response = await post_jose(http, PATH, token)
    assert response.status_code == 400, response.text


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"[1, 2]", b'"string"', b"\xff\xfe", b"", b'{"iat": NaN}'],
)
async def test_a_payload_that_is_not_a_json_object_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User, payload: bytes
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    header = {"alg": "ES256", "typ": "bc-device+jwt", "kid": phone.device_id}
    response = await post_jose(http, PATH, sign_jws(header, payload, phone.key))
    assert response.status_code == 400, response.text


async def test_a_wrong_content_type_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    token = phone.call_jws(PATH)
    for content_type in ("application/json", "text/plain", "application/x-www-form-urlencoded"):
        response = await http.post(PATH, content=token, headers={"Content-Type": content_type})
        assert response.status_code == 400
    assert (await http.post(PATH, content=token)).status_code == 400
    # The refused attempts did not spend the jti.
    assert (await post_jose(http, PATH, token)).status_code == 200


async def test_an_oversized_body_is_refused(http: httpx.AsyncClient) -> None:
    response = await post_jose(http, PATH, "a" * 20000)
    assert response.status_code == 413
    assert _error(response) == "invalid_request"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b"garbage",
        b"a.b",
        b"a.b.c",
        b"a.b.c.d.e",
        b"\xff\xfe\x00",
        b"eyJhbGciOiJFUzI1NiJ9.e30.",
        b"e30.e30.e30",
        b"W10.e30.e30",
        b"eyJhbGciOjF9.e30.e30",
        "é.é.é".encode(),
    ],
)
async def test_malformed_bodies_are_refused_without_a_server_error(
    http: httpx.AsyncClient, body: bytes
) -> None:
    for path in (PATH, "/device/enrol", "/device/decision", "/device/remove"):
        response = await post_jose(http, path, body)
        assert response.status_code == 400, (path, body, response.text)
        assert _error(response) == "invalid_request"


async def test_device_endpoints_answer_post_only(http: httpx.AsyncClient) -> None:
    assert (await http.get(PATH)).status_code == 405
    assert (await http.post("/device/config")).status_code == 405
