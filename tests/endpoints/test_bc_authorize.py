"""POST /bc-authorize through HTTP against the app (CIBA §7)."""

from __future__ import annotations

import json
import re
from typing import Any

import asyncpg
import httpx
import pytest

from backchannel.db.users import User
from backchannel.oauth.secrets import hash_secret
from backchannel.oauth.user_codes import hash_user_code
from tests.conftest import RegisteredClient
from tests.support.ciba import audit_events, start_request

pytestmark = pytest.mark.usefixtures("alice")


async def test_valid_request_returns_auth_req_id_expiry_and_interval(
    http: httpx.AsyncClient, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    response = await start_request(http, rp.basic_auth(), binding_message="Pay 80 EUR at Acme?")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"auth_req_id", "expires_in", "interval"}
    assert re.fullmatch(r"[A-Za-z0-9._-]{43,}", body["auth_req_id"])
    assert body["expires_in"] == 300
    assert body["interval"] == 5
    row = await db.fetchrow("SELECT * FROM auth_requests")
    assert bytes(row["id_hash"]) == hash_secret(body["auth_req_id"])
    assert body["auth_req_id"].encode() not in json.dumps(dict(row), default=str).encode()
    assert row["binding_message"] == "Pay 80 EUR at Acme?"
    assert row["status"] == "pending"


async def test_each_request_gets_a_different_auth_req_id(
    http: httpx.AsyncClient, rp: RegisteredClient
) -> None:
    # Three: the default cap on one user's pending requests.
    ids = {(await start_request(http, rp.basic_auth())).json()["auth_req_id"] for _ in range(3)}
    assert len(ids) == 3


@pytest.mark.parametrize(
    "scope", ["openid", "profile openid", "email openid phone", "openid openid"]
)
async def test_scope_order_and_repetition_do_not_matter(
    http: httpx.AsyncClient, rp: RegisteredClient, scope: str
) -> None:
    assert (await start_request(http, rp.basic_auth(), scope=scope)).status_code == 200


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"scope": None}, "invalid_request"),
        ({"scope": "profile email"}, "invalid_scope"),
        ({"scope": "openid payments"}, "invalid_scope"),
        ({"login_hint": None}, "invalid_request"),
        ({"login_hint": None, "id_token_hint": "x.y.z"}, "invalid_request"),
        ({"login_hint": None, "login_hint_token": "x.y.z"}, "invalid_request"),
        ({"login_hint": "nobody@example.com"}, "unknown_user_id"),
        ({"login_hint": "tel:+15550000000"}, "unknown_user_id"),
        ({"binding_message": "line\nbreak"}, "invalid_binding_message"),
        ({"binding_message": "x" * 129}, "invalid_binding_message"),
        ({"requested_expiry": "0"}, "invalid_request"),
        ({"requested_expiry": "-5"}, "invalid_request"),
        ({"requested_expiry": "1.5"}, "invalid_request"),
        ({"requested_expiry": "soon"}, "invalid_request"),
    ],
)
async def test_invalid_request_gets_the_specified_error(
    http: httpx.AsyncClient, rp: RegisteredClient, params: dict[str, Any], error: str
) -> None:
    response = await start_request(http, rp.basic_auth(), **params)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == error
    assert set(response.json()) <= {"error", "error_description"}


@pytest.mark.parametrize(
    "hint", ["alice@example.com", "ALICE@Example.com", "tel:+447700900123", "12345678", "alice"]
)
async def test_login_hint_in_any_supported_form_finds_the_user(
    http: httpx.AsyncClient, rp: RegisteredClient, db: asyncpg.Connection, hint: str, alice: User
) -> None:
    response = await start_request(http, rp.basic_auth(), login_hint=hint)
    assert response.status_code == 200, response.text
    assert await db.fetchval("SELECT user_id FROM auth_requests") == alice.user_id


async def test_emoji_and_cjk_binding_message_is_stored_exactly(
    http: httpx.AsyncClient, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    message = "支払い ☕ 8000 円 👨‍👩‍👧"
    assert (await start_request(http, rp.basic_auth(), binding_message=message)).status_code == 200
    assert await db.fetchval("SELECT binding_message FROM auth_requests") == message


async def test_requested_expiry_as_string_is_honoured(
    http: httpx.AsyncClient, rp: RegisteredClient
) -> None:
    response = await start_request(http, rp.basic_auth(), requested_expiry="120")
    assert response.json()["expires_in"] == 120


async def test_requested_expiry_above_the_cap_is_capped(
    http: httpx.AsyncClient, make_client: Any
) -> None:
    capped = await make_client(max_requested_expiry=60)
    response = await start_request(http, capped.basic_auth(), requested_expiry="3600")
    assert response.status_code == 200
    assert response.json()["expires_in"] == 60


async def test_two_hints_at_once_are_refused(http: httpx.AsyncClient, rp: RegisteredClient) -> None:
    response = await start_request(http, rp.basic_auth(), login_hint_token="a.b.c")
    assert response.json()["error"] == "invalid_request"


async def test_duplicated_parameter_is_refused(
    http: httpx.AsyncClient, rp: RegisteredClient
) -> None:
    response = await http.post(
        "/bc-authorize",
        content="scope=openid&login_hint=alice&login_hint=bob",
        headers={**rp.basic_auth(), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_json_body_is_refused_as_invalid_request(
    http: httpx.AsyncClient, rp: RegisteredClient
) -> None:
    response = await http.post(
        "/bc-authorize", json={"scope": "openid", "login_hint": "alice"}, headers=rp.basic_auth()
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_oversized_body_is_refused_without_reading_it_all(
    http: httpx.AsyncClient, rp: RegisteredClient
) -> None:
    response = await start_request(http, rp.basic_auth(), binding_message="x" * 70_000)
    assert response.status_code == 413
    assert response.json()["error"] == "invalid_request"


async def test_body_that_is_not_utf8_is_refused(
    http: httpx.AsyncClient, rp: RegisteredClient
) -> None:
    response = await http.post(
        "/bc-authorize",
        content=b"scope=openid&login_hint=%ff%fe",
        headers={**rp.basic_auth(), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_unauthenticated_request_is_invalid_client(http: httpx.AsyncClient) -> None:
    response = await http.post("/bc-authorize", data={"scope": "openid", "login_hint": "alice"})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


async def test_wrong_secret_is_invalid_client_with_basic_challenge(
    http: httpx.AsyncClient, rp: RegisteredClient
) -> None:
    response = await start_request(
        http, {"Authorization": "Basic " + "d3Jvbmc6c2VjcmV0"}, login_hint="alice"
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


async def test_client_without_the_ciba_grant_is_unauthorized_client(
    http: httpx.AsyncClient, make_client: Any
) -> None:
    other = await make_client(grant_types=("refresh_token",))
    response = await start_request(http, other.basic_auth())
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"


async def test_disabled_user_is_unknown(
    http: httpx.AsyncClient, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    await db.execute("UPDATE users SET disabled_at = now()")
    response = await start_request(http, rp.basic_auth())
    assert response.json()["error"] == "unknown_user_id"


async def test_user_code_is_required_when_the_client_uses_it(
    http: httpx.AsyncClient, make_client: Any, db: asyncpg.Connection
) -> None:
    await db.execute("UPDATE users SET user_code_hash = $1", hash_user_code("4711"))
    coded = await make_client(backchannel_user_code_parameter=True)
    missing = await start_request(http, coded.basic_auth())
    assert missing.json()["error"] == "missing_user_code"
    wrong = await start_request(http, coded.basic_auth(), user_code="0000")
    assert wrong.json()["error"] == "invalid_user_code"
    right = await start_request(http, coded.basic_auth(), user_code="4711")
    assert right.status_code == 200


async def test_client_required_to_sign_is_refused_an_unsigned_request(
    http: httpx.AsyncClient, make_client: Any
) -> None:
    strict = await make_client(require_signed_request=True)
    response = await start_request(http, strict.basic_auth())
    assert response.json()["error"] == "invalid_request"
    assert "signed" in response.json()["error_description"]


async def test_issuance_and_rejection_are_audited(
    http: httpx.AsyncClient, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    await start_request(http, rp.basic_auth())
    await start_request(http, rp.basic_auth(), login_hint="nobody@example.com")
    issued = await audit_events(db, "auth_request_issued")
    rejected = await audit_events(db, "auth_request_rejected")
    assert len(issued) == 1 and issued[0]["client_id"] == rp.client_id
    assert issued[0]["auth_request_id"] is not None
    assert len(rejected) == 1 and rejected[0]["detail"]["error"] == "unknown_user_id"


async def test_error_description_never_carries_disallowed_characters(
    http: httpx.AsyncClient, rp: RegisteredClient
) -> None:
    response = await start_request(http, rp.basic_auth(), scope='openid "quoted\\"')
    description = response.json().get("error_description", "")
    assert re.fullmatch(r"[\x20\x21\x23-\x5b\x5d-\x7e]*", description)


async def test_get_is_not_allowed(http: httpx.AsyncClient) -> None:
    response = await http.get("/bc-authorize")
    assert response.status_code == 405
