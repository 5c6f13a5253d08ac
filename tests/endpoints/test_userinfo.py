"""GET/POST /userinfo behind a bearer access token (OIDC Core §5.3, RFC 6750)."""

from __future__ import annotations

import asyncpg
import httpx

from backchannel.db.users import User
from backchannel.oauth.access_tokens import read_access_token
from backchannel.oauth.services import Services
from tests.conftest import ISSUER, RegisteredClient
from tests.support.tokens import issue_tokens_for

issue = issue_tokens_for


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_invalid_token(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_token"
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert response.headers["cache-control"] == "no-store"


async def test_get_with_a_bearer_header_returns_claims_for_the_scope(
    services: Services, http: httpx.AsyncClient, rp: RegisteredClient, alice: User
) -> None:
    token = (await issue(services, rp, alice))["access_token"]
    response = await http.get("/userinfo", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {"sub": "alice", "email": "alice@example.com"}


async def test_profile_and_phone_scopes_release_name_and_phone_number(
    services: Services, http: httpx.AsyncClient, rp: RegisteredClient, alice: User
) -> None:
    token = (await issue(services, rp, alice, "openid profile phone"))["access_token"]
    response = await http.get("/userinfo", headers=bearer(token))
    assert response.json() == {
        "sub": "alice",
        "name": "Alice Example",
        "phone_number": "+447700900123",
    }


async def test_post_accepts_the_token_in_the_header_or_the_form_body(
    services: Services, http: httpx.AsyncClient, rp: RegisteredClient, alice: User
) -> None:
    token = (await issue(services, rp, alice))["access_token"]
    in_header = await http.post("/userinfo", headers=bearer(token))
    in_body = await http.post("/userinfo", data={"access_token": token})
    assert in_header.status_code == in_body.status_code == 200
    assert in_header.json() == in_body.json()


async def test_a_token_sent_two_ways_is_an_invalid_request(
    services: Services, http: httpx.AsyncClient, rp: RegisteredClient, alice: User
) -> None:
    token = (await issue(services, rp, alice))["access_token"]
    response = await http.post("/userinfo", data={"access_token": token}, headers=bearer(token))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert 'error="invalid_request"' in response.headers["www-authenticate"]


async def test_no_credentials_get_a_bare_bearer_challenge(http: httpx.AsyncClient) -> None:
    for response in (
        await http.get("/userinfo"),
        await http.get("/userinfo", headers={"Authorization": "Basic dXNlcjpwYXNz"}),
        await http.get("/userinfo", params={"access_token": "query-is-not-supported"}),
        await http.post("/userinfo", json={"access_token": "json-is-not-a-form"}),
    ):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"


async def test_tokens_that_are_not_ours_or_malformed_are_refused(
    services: Services, http: httpx.AsyncClient, rp: RegisteredClient, alice: User
) -> None:
    issued = await issue(services, rp, alice)
    for token in (issued["id_token"], issued["refresh_token"], "abc.def.ghi", "x" * 4000):
        assert_invalid_token(await http.get("/userinfo", headers=bearer(token)))
    malformed = await http.get("/userinfo", headers={"Authorization": "Bearer not a token"})
    assert malformed.status_code == 400
    assert malformed.json()["error"] == "invalid_request"


async def test_expired_and_revoked_tokens_are_refused(
    services: Services,
    http: httpx.AsyncClient,
    rp: RegisteredClient,
    alice: User,
    db: asyncpg.Connection,
) -> None:
    expired = (await issue(services, rp, alice))["access_token"]
    revoked = (await issue(services, rp, alice))["access_token"]
    claims = read_access_token(services.keys, expired, issuer=ISSUER)
    assert claims is not None
    await db.execute(
        "UPDATE access_tokens SET expires_at = now() - interval '1 second' WHERE jti = $1",
        claims["jti"],
    )
    assert_invalid_token(await http.get("/userinfo", headers=bearer(expired)))
    response = await http.post("/revoke", data={"token": revoked}, headers=rp.basic_auth())
    assert response.status_code == 200
    assert_invalid_token(await http.get("/userinfo", headers=bearer(revoked)))


async def test_a_token_without_openid_scope_is_insufficient(
    services: Services, http: httpx.AsyncClient, rp: RegisteredClient, alice: User
) -> None:
    token = (await issue(services, rp, alice, "email"))["access_token"]
    response = await http.get("/userinfo", headers=bearer(token))
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


async def test_a_disabled_user_gets_no_claims(
    services: Services,
    http: httpx.AsyncClient,
    rp: RegisteredClient,
    alice: User,
    db: asyncpg.Connection,
) -> None:
    token = (await issue(services, rp, alice))["access_token"]
    await db.execute("UPDATE users SET disabled_at = now() WHERE user_id = $1", alice.user_id)
    assert_invalid_token(await http.get("/userinfo", headers=bearer(token)))


async def test_bad_form_bodies_are_client_errors(http: httpx.AsyncClient) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for body in (b"access_token=a&access_token=b", b"\xff\xfe", b"access_token=%ff"):
        response = await http.post("/userinfo", content=body, headers=form)
        assert response.status_code == 400, body
        assert response.json()["error"] == "invalid_request"
