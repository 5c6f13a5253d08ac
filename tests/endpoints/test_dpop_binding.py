"""DPoP (RFC 9449) end to end: proofs at /token for both grants, DPoP-bound tokens at
/userinfo and /introspect, nonces, and the replay cache shared by two instances."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import asyncpg
import httpx

from backchannel.db.users import User
from backchannel.settings import Settings
from tests.conftest import ISSUER, RegisteredClient, start_app
from tests.support.ciba import CIBA_GRANT, audit_events, decide, start_auth_req_id
from tests.support.dpop import DPoPKey

TOKEN_URL = ISSUER + "/token"
USERINFO_URL = ISSUER + "/userinfo"


async def approved(http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient) -> str:
    auth_req_id = await start_auth_req_id(http, rp.basic_auth(), scope="openid email")
    await decide(db, auth_req_id)
    return auth_req_id


async def redeem(
    http: httpx.AsyncClient, rp: RegisteredClient, auth_req_id: str, proof: str | None
) -> httpx.Response:
    headers = {**rp.basic_auth(), **({"DPoP": proof} if proof is not None else {})}
    return await http.post(
        "/token", data={"grant_type": CIBA_GRANT, "auth_req_id": auth_req_id}, headers=headers
    )


async def refresh(
    http: httpx.AsyncClient, rp: RegisteredClient, refresh_token: str, proof: str | None
) -> httpx.Response:
    headers = {**rp.basic_auth(), **({"DPoP": proof} if proof is not None else {})}
    return await http.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        headers=headers,
    )


async def userinfo(
    http: httpx.AsyncClient, token: str, proof: str | None, scheme: str = "DPoP"
) -> httpx.Response:
    headers = {"Authorization": f"{scheme} {token}"}
    if proof is not None:
        headers["DPoP"] = proof
    return await http.get("/userinfo", headers=headers)


def _peek(token: str) -> dict[str, Any]:
    """The claims of one of the server's JWTs (its signature is the server's business)."""
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def assert_refused(response: httpx.Response, error: str, reason: str, status: int = 400) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert reason in response.json()["error_description"]


async def dpop_tokens(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, key: DPoPKey
) -> dict[str, Any]:
    response = await redeem(http, rp, await approved(http, db, rp), key.proof("POST", TOKEN_URL))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_valid_proof_binds_the_tokens_to_its_key(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    key = DPoPKey()
    body = await dpop_tokens(http, db, rp, key)
    assert body["token_type"] == "DPoP"
    assert _peek(body["access_token"])["cnf"] == {"jkt": key.jkt}
    introspected = await http.post(
        "/introspect", data={"token": body["access_token"]}, headers=rp.basic_auth()
    )
    assert introspected.json()["cnf"] == {"jkt": key.jkt}
    assert introspected.json()["token_type"] == "DPoP"
    token = body["access_token"]
    answer = await userinfo(http, token, key.proof("GET", USERINFO_URL, access_token=token))
    assert answer.status_code == 200, answer.text
    assert answer.json()["sub"] == "alice"
    issued = await audit_events(db, "token_issued")
    assert issued[-1]["detail"]["cnf"] == {"jkt": key.jkt}


async def test_without_a_proof_tokens_stay_bearer_tokens(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    response = await redeem(http, rp, await approved(http, db, rp), None)
    assert response.json()["token_type"] == "Bearer"
    assert "cnf" not in _peek(response.json()["access_token"])


async def test_a_proof_for_another_url_or_method_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    key = DPoPKey()
    auth_req_id = await approved(http, db, rp)
    for proof, reason in (
        (key.proof("POST", ISSUER + "/bc-authorize"), "another URL"),
        (key.proof("POST", "https://evil.example/token"), "another URL"),
        (key.proof("GET", TOKEN_URL), "another HTTP method"),
    ):
        assert_refused(await redeem(http, rp, auth_req_id, proof), "invalid_dpop_proof", reason)
    # The request is still there: none of those spent it.
    good = await redeem(http, rp, auth_req_id, key.proof("POST", TOKEN_URL))
    assert good.status_code == 200, good.text


async def test_a_stale_or_future_proof_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    key = DPoPKey()
    auth_req_id = await approved(http, db, rp)
    for iat in (int(time.time()) - 120, int(time.time()) + 120):
        stale = key.proof("POST", TOKEN_URL, iat=iat)
        assert_refused(await redeem(http, rp, auth_req_id, stale), "invalid_dpop_proof", "iat")


async def test_a_replayed_proof_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    key = DPoPKey()
    proof = key.proof("POST", TOKEN_URL)
    first = await redeem(http, rp, "not-yet-approved", proof)
    assert first.json()["error"] == "invalid_grant"  # the proof itself was fine
    replay = await redeem(http, rp, await approved(http, db, rp), proof)
    assert_refused(replay, "invalid_dpop_proof", "used already")


async def test_a_proof_replayed_at_another_instance_is_refused(
    settings: Settings, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    key = DPoPKey()
    proof = key.proof("POST", TOKEN_URL)
    async for one in start_app(settings):
        async for other in start_app(settings):
            auth_req_id = await approved(one.http, db, rp)
            assert (await redeem(one.http, rp, auth_req_id, proof)).status_code == 200
            replay = await redeem(other.http, rp, await approved(other.http, db, rp), proof)
            assert_refused(replay, "invalid_dpop_proof", "used already")


async def test_a_client_registered_for_dpop_must_send_a_proof(
    http: httpx.AsyncClient, db: asyncpg.Connection, make_client: Any, alice: User
) -> None:
    rp = await make_client(dpop_bound_access_tokens=True)
    auth_req_id = await approved(http, db, rp)
    assert_refused(await redeem(http, rp, auth_req_id, None), "invalid_dpop_proof", "must send")


async def test_at_userinfo_a_proof_by_another_key_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    key, thief = DPoPKey(), DPoPKey()
    token = (await dpop_tokens(http, db, rp, key))["access_token"]
    answer = await userinfo(http, token, thief.proof("GET", USERINFO_URL, access_token=token))
    assert_refused(answer, "invalid_dpop_proof", "another key", status=401)
    assert answer.headers["www-authenticate"].startswith('DPoP error="invalid_dpop_proof"')


async def test_at_userinfo_a_proof_without_ath_or_none_at_all_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    key = DPoPKey()
    token = (await dpop_tokens(http, db, rp, key))["access_token"]
    no_ath = await userinfo(http, token, key.proof("GET", USERINFO_URL))
    assert_refused(no_ath, "invalid_dpop_proof", "ath", status=401)
    other_token = key.proof("GET", USERINFO_URL, access_token=token + "x")
    assert_refused(await userinfo(http, token, other_token), "invalid_dpop_proof", "ath", 401)
    missing = await userinfo(http, token, None)
    assert_refused(missing, "invalid_dpop_proof", "exactly one DPoP header", status=401)
    assert missing.headers["www-authenticate"].startswith('DPoP error="invalid_dpop_proof"')


async def test_a_dpop_bound_token_sent_as_bearer_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    key = DPoPKey()
    token = (await dpop_tokens(http, db, rp, key))["access_token"]
    proof = key.proof("GET", USERINFO_URL, access_token=token)
    for answer in (
        await userinfo(http, token, proof, scheme="Bearer"),
        await http.post("/userinfo", data={"access_token": token}),
    ):
        assert_refused(answer, "invalid_token", "DPoP-bound", status=401)
        assert answer.headers["www-authenticate"].startswith('DPoP error="invalid_token"')


async def test_a_bearer_token_sent_as_dpop_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    key = DPoPKey()
    token = (await redeem(http, rp, await approved(http, db, rp), None)).json()["access_token"]
    answer = await userinfo(http, token, key.proof("GET", USERINFO_URL, access_token=token))
    assert_refused(answer, "invalid_token", "not DPoP-bound", status=401)


async def test_a_required_nonce_is_asked_for_then_accepted_at_token_and_userinfo(
    http: httpx.AsyncClient, db: asyncpg.Connection, make_client: Any, alice: User
) -> None:
    rp = await make_client(dpop_bound_access_tokens=True, require_dpop_nonce=True)
    key = DPoPKey()
    auth_req_id = await approved(http, db, rp)
    asked = await redeem(http, rp, auth_req_id, key.proof("POST", TOKEN_URL))
    assert_refused(asked, "use_dpop_nonce", "nonce")
    nonce = asked.headers["dpop-nonce"]
    stale = await redeem(http, rp, auth_req_id, key.proof("POST", TOKEN_URL, nonce="1.forged"))
    assert stale.json()["error"] == "use_dpop_nonce"
    granted = await redeem(http, rp, auth_req_id, key.proof("POST", TOKEN_URL, nonce=nonce))
    assert granted.status_code == 200, granted.text
    assert granted.headers["dpop-nonce"] == nonce
    token = granted.json()["access_token"]

    asked = await userinfo(http, token, key.proof("GET", USERINFO_URL, access_token=token))
    assert asked.status_code == 401
    assert asked.headers["www-authenticate"].startswith('DPoP error="use_dpop_nonce"')
    assert asked.headers["dpop-nonce"] == nonce
    answered = await userinfo(
        http, token, key.proof("GET", USERINFO_URL, access_token=token, nonce=nonce)
    )
    assert answered.status_code == 200, answered.text


async def test_a_nonce_setting_asks_every_client_for_nonces(
    settings: Settings, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    async for running in start_app(settings.replace(dpop_nonce_required=True)):
        auth_req_id = await approved(running.http, db, rp)
        asked = await redeem(running.http, rp, auth_req_id, DPoPKey().proof("POST", TOKEN_URL))
        assert asked.json()["error"] == "use_dpop_nonce"


async def test_a_refresh_token_stays_bound_to_the_dpop_key(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    key, thief = DPoPKey(), DPoPKey()
    refresh_token = (await dpop_tokens(http, db, rp, key))["refresh_token"]
    without = await refresh(http, rp, refresh_token, None)
    assert_refused(without, "invalid_dpop_proof", "DPoP-bound")
    # The client is told exactly what to fix.
    assert without.json()["error_description"] == (
        "this refresh token is DPoP-bound: send a DPoP proof"
    )
    stolen = await refresh(http, rp, refresh_token, thief.proof("POST", TOKEN_URL))
    assert_refused(stolen, "invalid_dpop_proof", "another DPoP key")
    assert stolen.json()["error_description"] == "this refresh token is bound to another DPoP key"
    # Neither attempt spent the token: its holder refreshes, and stays bound.
    renewed = await refresh(http, rp, refresh_token, key.proof("POST", TOKEN_URL))
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["token_type"] == "DPoP"
    assert _peek(renewed.json()["access_token"])["cnf"] == {"jkt": key.jkt}
    again = await refresh(http, rp, renewed.json()["refresh_token"], thief.proof("POST", TOKEN_URL))
    assert_refused(again, "invalid_dpop_proof", "another DPoP key")
