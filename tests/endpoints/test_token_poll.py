"""POST /token with the CIBA grant in poll mode (CIBA §10.1, §11)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.conftest import RegisteredClient, RunningApp
from tests.support.ciba import (
    CIBA_GRANT,
    audit_events,
    decide,
    poll,
    poll_is_held,
    rewind,
    start_auth_req_id,
)
from tests.support.waiting import eventually

pytestmark = pytest.mark.usefixtures("alice")


def error_of(response: httpx.Response) -> str:
    error: str = response.json()["error"]
    return error


async def test_undecided_request_answers_authorization_pending(
    http: httpx.AsyncClient, rp: RegisteredClient
) -> None:
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    response = await poll(http, rp.basic_auth(), auth_req_id)
    assert response.status_code == 400
    assert error_of(response) == "authorization_pending"
    assert response.headers["cache-control"] == "no-store"


async def test_approved_request_yields_tokens_once(
    http: httpx.AsyncClient, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    auth_req_id = await start_auth_req_id(http, rp.basic_auth(), scope="openid email")
    await decide(db, auth_req_id, "approved")
    response = await poll(http, rp.basic_auth(), auth_req_id)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] > 0
    assert {"access_token", "id_token", "refresh_token"} <= set(body)
    jwks = KeySet.import_key_set((await http.get("/jwks")).json())
    id_token = jwt.decode(body["id_token"], jwks)
    assert id_token.claims["sub"] == "alice"
    assert id_token.claims["aud"] == rp.client_id
    assert id_token.claims["urn:openid:params:jwt:claim:auth_req_id"] == auth_req_id
    again = await poll(http, rp.basic_auth(), auth_req_id)
    assert again.status_code == 400
    assert error_of(again) == "invalid_grant"


async def test_denied_request_answers_access_denied(
    http: httpx.AsyncClient, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    await decide(db, auth_req_id, "denied")
    response = await poll(http, rp.basic_auth(), auth_req_id)
    assert response.status_code == 400
    assert error_of(response) == "access_denied"


async def test_expired_request_answers_expired_token(
    http: httpx.AsyncClient, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    await rewind(db, auth_req_id, 301)
    response = await poll(http, rp.basic_auth(), auth_req_id)
    assert error_of(response) == "expired_token"


async def test_approval_after_expiry_is_refused_and_poll_says_expired(
    http: httpx.AsyncClient, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    from backchannel.errors import RequestNotPending

    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    await rewind(db, auth_req_id, 301)
    with pytest.raises(RequestNotPending, match="expired"):
        await decide(db, auth_req_id, "approved")
    assert error_of(await poll(http, rp.basic_auth(), auth_req_id)) == "expired_token"


async def test_another_clients_auth_req_id_is_invalid_grant(
    http: httpx.AsyncClient, rp: RegisteredClient, make_client: Any, db: asyncpg.Connection
) -> None:
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    await decide(db, auth_req_id, "approved")
    intruder = await make_client()
    response = await poll(http, intruder.basic_auth(), auth_req_id)
    assert error_of(response) == "invalid_grant"
    # ...and the rightful client can still redeem it.
    assert (await poll(http, rp.basic_auth(), auth_req_id)).status_code == 200


@pytest.mark.parametrize("auth_req_id", ["unknown-id", "bad id with spaces", "é" * 10, "x" * 300])
async def test_unknown_or_malformed_auth_req_id_is_invalid_grant(
    http: httpx.AsyncClient, rp: RegisteredClient, auth_req_id: str
) -> None:
    response = await poll(http, rp.basic_auth(), auth_req_id)
    assert response.status_code == 400
    assert error_of(response) == "invalid_grant"


async def test_missing_auth_req_id_is_invalid_request(
    http: httpx.AsyncClient, rp: RegisteredClient
) -> None:
    response = await http.post("/token", data={"grant_type": CIBA_GRANT}, headers=rp.basic_auth())
    assert error_of(response) == "invalid_request"


async def test_missing_grant_type_is_invalid_request(
    http: httpx.AsyncClient, rp: RegisteredClient
) -> None:
    response = await http.post("/token", data={"auth_req_id": "x"}, headers=rp.basic_auth())
    assert error_of(response) == "invalid_request"


async def test_unknown_grant_type_is_unsupported_grant_type(
    http: httpx.AsyncClient, rp: RegisteredClient
) -> None:
    response = await http.post(
        "/token", data={"grant_type": "password", "username": "a"}, headers=rp.basic_auth()
    )
    assert response.status_code == 400
    assert error_of(response) == "unsupported_grant_type"


async def test_push_mode_client_may_not_use_the_ciba_grant(
    http: httpx.AsyncClient, make_client: Any
) -> None:
    pusher = await make_client(
        backchannel_token_delivery_mode="push",
        backchannel_client_notification_endpoint="https://rp.example/cb",
    )
    response = await poll(http, pusher.basic_auth(), "whatever")
    assert error_of(response) == "unauthorized_client"


async def test_unauthenticated_poll_is_invalid_client(http: httpx.AsyncClient) -> None:
    response = await http.post("/token", data={"grant_type": CIBA_GRANT, "auth_req_id": "x"})
    assert response.status_code == 401
    assert error_of(response) == "invalid_client"


async def test_wrong_content_type_is_invalid_request(
    http: httpx.AsyncClient, rp: RegisteredClient
) -> None:
    response = await http.post(
        "/token", json={"grant_type": CIBA_GRANT, "auth_req_id": "x"}, headers=rp.basic_auth()
    )
    assert response.status_code == 400
    assert error_of(response) == "invalid_request"


async def test_polling_faster_than_the_interval_gets_slow_down_and_a_longer_interval(
    http: httpx.AsyncClient, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    assert error_of(await poll(http, rp.basic_auth(), auth_req_id)) == "authorization_pending"
    assert error_of(await poll(http, rp.basic_auth(), auth_req_id)) == "slow_down"
    assert await db.fetchval("SELECT poll_interval FROM auth_requests") == 10
    await rewind(db, auth_req_id, 7)  # past the old 5 s interval, not the new 10 s one
    assert error_of(await poll(http, rp.basic_auth(), auth_req_id)) == "slow_down"
    assert await db.fetchval("SELECT poll_interval FROM auth_requests") == 15
    await rewind(db, auth_req_id, 16)
    assert error_of(await poll(http, rp.basic_auth(), auth_req_id)) == "authorization_pending"
    assert [e["detail"]["interval"] for e in await audit_events(db, "poll_slow_down")] == [10, 15]


async def test_polling_at_the_interval_never_slows_down(
    http: httpx.AsyncClient, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    for _ in range(5):
        assert error_of(await poll(http, rp.basic_auth(), auth_req_id)) == "authorization_pending"
        await rewind(db, auth_req_id, 5)
    await decide(db, auth_req_id, "approved")
    assert (await poll(http, rp.basic_auth(), auth_req_id)).status_code == 200


async def test_burst_of_twenty_polls_is_slowed_and_locked_but_not_killed(
    http: httpx.AsyncClient, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    """The conformance suite's multiple-call-to-token-endpoint burst."""
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    answers = [await poll(http, rp.basic_auth(), auth_req_id) for _ in range(20)]
    for response in answers:
        if response.status_code == 503:
            assert int(response.headers["retry-after"]) >= 1
        else:
            assert error_of(response) in ("authorization_pending", "slow_down")
    assert any(r.status_code == 503 for r in answers)
    assert await db.fetchval("SELECT status FROM auth_requests") == "pending"
    # Once the lock has passed and the user approves, a well-behaved poll gets tokens.
    await rewind(db, auth_req_id, 120)
    await decide(db, auth_req_id, "approved")
    assert (await poll(http, rp.basic_auth(), auth_req_id)).status_code == 200


async def test_lockout_escalates_to_terminal_denial_past_the_threshold(
    settings: Any, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    from tests.conftest import start_app

    strict = settings.replace(poll_lock_after=3, poll_deny_after=6)
    async for app in start_app(strict):
        auth_req_id = await start_auth_req_id(app.http, rp.basic_auth())
        codes = []
        for _ in range(8):
            response = await poll(app.http, rp.basic_auth(), auth_req_id)
            codes.append(
                response.status_code if response.status_code == 503 else error_of(response)
            )
        assert codes == [
            "authorization_pending",
            "slow_down",
            "slow_down",
            503,
            503,
            503,
            "access_denied",
            "access_denied",
        ]
        row = await db.fetchrow("SELECT status, denial_reason FROM auth_requests")
        assert (row["status"], row["denial_reason"]) == ("denied", "poll_abuse")
        events = [e["event"] for e in await audit_events(db) if e["event"].startswith("poll_")]
        assert events == [
            "poll_slow_down",
            "poll_slow_down",
            "poll_locked",
            "poll_refused_locked",
            "poll_refused_locked",
            "poll_abuse_denied",
        ]


async def test_concurrent_polls_of_an_approved_request_yield_one_token_response(
    http: httpx.AsyncClient, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    await decide(db, auth_req_id, "approved")
    answers = await asyncio.gather(*(poll(http, rp.basic_auth(), auth_req_id) for _ in range(20)))
    assert sum(r.status_code == 200 for r in answers) == 1
    assert all(r.status_code in (200, 400, 503) for r in answers)
    assert await db.fetchval("SELECT count(*) FROM access_tokens") == 1


async def test_a_woken_long_poll_re_reads_the_request_without_waiting_for_its_row_lock(
    running: RunningApp, rp: RegisteredClient, db: asyncpg.Connection, database_url: str
) -> None:
    """The re-read after a wake-up records nothing, so it neither locks nor writes the
    row: a transaction holding the row lock does not hold the answer up."""
    from backchannel.db.pool import connect
    from backchannel.oauth.secrets import hash_secret

    http = running.http
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    held = asyncio.create_task(poll(http, rp.basic_auth(), auth_req_id, {"Prefer": "wait=25"}))
    await eventually(lambda: poll_is_held(db, running.services.waiters))
    await db.execute(
        """UPDATE auth_requests SET status = 'denied', denial_reason = 'user',
                  decided_at = now()"""
    )
    locker = await connect(database_url)
    try:
        async with locker.transaction():
            await locker.execute("SELECT 1 FROM auth_requests FOR UPDATE")
            await db.execute("SELECT pg_notify('bc_decision', $1)", hash_secret(auth_req_id).hex())
            response = await asyncio.wait_for(held, 10)
    finally:
        await locker.close()
    assert response.status_code == 400
    assert error_of(response) == "access_denied"


async def test_long_poll_answers_the_moment_the_user_approves(
    running: RunningApp, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    http = running.http
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    held = asyncio.create_task(poll(http, rp.basic_auth(), auth_req_id, {"Prefer": "wait=25"}))
    await eventually(lambda: poll_is_held(db, running.services.waiters))
    assert not held.done()
    await decide(db, auth_req_id, "approved")
    # Long before the 25 s wait runs out: the decision woke the held poll.
    response = await asyncio.wait_for(held, 12)
    assert response.status_code == 200, response.text
    assert response.headers["preference-applied"] == "wait=25"


async def test_long_poll_answers_denial_immediately(
    running: RunningApp, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    http = running.http
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    held = asyncio.create_task(poll(http, rp.basic_auth(), auth_req_id, {"Prefer": "wait=25"}))
    await eventually(lambda: poll_is_held(db, running.services.waiters))
    await decide(db, auth_req_id, "denied")
    response = await asyncio.wait_for(held, 12)  # woken, long before the 25 s wait ends
    assert error_of(response) == "access_denied"


async def test_long_poll_without_decision_answers_pending_after_the_wait(
    http: httpx.AsyncClient, rp: RegisteredClient
) -> None:
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    started = time.monotonic()
    response = await poll(http, rp.basic_auth(), auth_req_id, {"Prefer": "wait=1"})
    assert error_of(response) == "authorization_pending"
    assert response.headers["preference-applied"] == "wait=1"
    assert time.monotonic() - started >= 0.9


async def test_long_poll_wait_is_capped_at_the_configured_maximum(
    settings: Any, rp: RegisteredClient
) -> None:
    from tests.conftest import start_app

    async for app in start_app(settings.replace(long_poll_max=1)):
        auth_req_id = await start_auth_req_id(app.http, rp.basic_auth())
        started = time.monotonic()
        response = await asyncio.wait_for(
            poll(app.http, rp.basic_auth(), auth_req_id, {"Prefer": "wait=9999"}), 10
        )
        assert error_of(response) == "authorization_pending"
        assert response.headers["preference-applied"] == "wait=1"
        assert 0.9 <= time.monotonic() - started < 8


def test_wait_preference_is_parsed_and_capped() -> None:
    from backchannel.endpoints.token import requested_wait

    assert requested_wait("wait=9999", 30) == 30
    assert requested_wait("respond-async, wait=12", 30) == 12
    assert requested_wait("wait=abc", 30) == 0
    assert requested_wait(None, 30) == 0


async def test_shutdown_answers_held_polls_at_once(
    running: RunningApp, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    auth_req_id = await start_auth_req_id(running.http, rp.basic_auth())
    held = asyncio.create_task(
        poll(running.http, rp.basic_auth(), auth_req_id, {"Prefer": "wait=25"})
    )
    await eventually(lambda: poll_is_held(db, running.services.waiters))
    running.services.waiters.release_all()
    response = await asyncio.wait_for(held, 12)  # long before the 25 s wait ends
    assert error_of(response) == "authorization_pending"
    assert response.headers["preference-applied"] == "wait=25"


async def test_spent_request_answer_to_a_long_poll_says_the_preference_was_applied(
    http: httpx.AsyncClient, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    await decide(db, auth_req_id, "approved")
    assert (await poll(http, rp.basic_auth(), auth_req_id)).status_code == 200
    await rewind(db, auth_req_id, 6)
    again = await poll(http, rp.basic_auth(), auth_req_id, {"Prefer": "wait=5"})
    assert error_of(again) == "invalid_grant"
    assert again.headers["preference-applied"] == "wait=5"


async def test_redeeming_an_approved_request_hands_over_everything_the_approval_holds(
    http: httpx.AsyncClient, rp: RegisteredClient, db: asyncpg.Connection, alice: Any
) -> None:
    from backchannel.db.auth_requests import Redemption, redeem_auth_request

    auth_req_id = await start_auth_req_id(http, rp.basic_auth(), scope="openid email")
    details = [{"type": "payment_initiation", "instructedAmount": {"amount": "80.00"}}]
    await db.execute(
        """UPDATE auth_requests SET acr_values = $1, acr = $2, amr = $3,
                  authorization_details = $4""",
        ["urn:example:mfa", "urn:example:pwd"],
        "urn:example:mfa",
        ["hwk", "user"],
        details,
    )
    decision = await decide(db, auth_req_id, "approved")
    request_id = await db.fetchval("SELECT id FROM auth_requests")

    assert await redeem_auth_request(db, request_id) == Redemption(
        id=request_id,
        user_id=alice.user_id,
        subject="alice",
        scope=("openid", "email"),
        acr_values=("urn:example:mfa", "urn:example:pwd"),
        decided_at=decision.decided_at,
        acr="urn:example:mfa",
        amr=("hwk", "user"),
        authorization_details=tuple(details),
    )
    assert await redeem_auth_request(db, request_id) is None  # spent: once only


async def test_redeeming_a_request_approved_without_extras_hands_over_none_for_them(
    http: httpx.AsyncClient, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    from backchannel.db.auth_requests import redeem_auth_request

    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    await decide(db, auth_req_id, "approved")
    redemption = await redeem_auth_request(db, await db.fetchval("SELECT id FROM auth_requests"))
    assert redemption is not None
    assert redemption.acr_values is None and redemption.amr is None
    assert redemption.authorization_details is None


async def test_each_refused_poll_tells_the_client_why(
    running: RunningApp, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    http = running.http

    def description(response: httpx.Response) -> str:
        text: str = response.json()["error_description"]
        return text

    malformed = await poll(http, rp.basic_auth(), "not an id!")
    assert (error_of(malformed), description(malformed)) == ("invalid_grant", "unknown auth_req_id")
    unknown = await poll(http, rp.basic_auth(), "no-such-request")
    assert (error_of(unknown), description(unknown)) == ("invalid_grant", "unknown auth_req_id")
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    pending = await poll(http, rp.basic_auth(), auth_req_id)
    assert description(pending) == "the user has not decided yet"
    polls = running.services.metrics.registry.get_sample_value(
        "backchannel_token_polls_total", {"verdict": "pending"}
    )
    assert polls == 1  # counted under its verdict
    too_soon = await poll(http, rp.basic_auth(), auth_req_id)
    interval = await db.fetchval("SELECT poll_interval FROM auth_requests")
    assert description(too_soon) == f"poll at most every {interval} seconds"
    for _ in range(7):  # past poll_lock_after strikes
        locked = await poll(http, rp.basic_auth(), auth_req_id)
    assert locked.status_code == 503
    assert description(locked) == "too many polls; retry later"
    await rewind(db, auth_req_id, 60)
    await decide(db, auth_req_id, "approved")
    assert (await poll(http, rp.basic_auth(), auth_req_id)).status_code == 200
    await rewind(db, auth_req_id, 60)
    spent = await poll(http, rp.basic_auth(), auth_req_id)
    assert description(spent) == "auth_req_id has already been used"


async def test_a_decision_records_the_deciding_device_and_the_reason(
    http: httpx.AsyncClient, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    decision = await decide(db, auth_req_id, "denied", device_id="phone-7", reason="user")
    assert (decision.status, decision.denial_reason) == ("denied", "user")
    row = await db.fetchrow("SELECT status, decided_by_device, denial_reason FROM auth_requests")
    assert dict(row) == {
        "status": "denied",
        "decided_by_device": "phone-7",
        "denial_reason": "user",
    }


async def test_slow_down_never_raises_the_interval_past_the_configured_maximum(
    settings: Any, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    from tests.conftest import start_app

    async for app in start_app(settings.replace(poll_interval_max=10)):
        auth_req_id = await start_auth_req_id(app.http, rp.basic_auth())
        answers = [error_of(await poll(app.http, rp.basic_auth(), auth_req_id)) for _ in range(4)]
        assert answers == ["authorization_pending"] + ["slow_down"] * 3
        assert await db.fetchval("SELECT poll_interval FROM auth_requests") == 10


async def test_each_ended_request_tells_the_client_how_it_ended(
    settings: Any, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    from tests.conftest import start_app

    def answer(response: httpx.Response) -> tuple[int, str, str]:
        body = response.json()
        return response.status_code, body["error"], body["error_description"]

    async for app in start_app(settings.replace(poll_lock_after=1, poll_deny_after=2)):
        denied = await start_auth_req_id(app.http, rp.basic_auth())
        await decide(db, denied, "denied")
        assert answer(await poll(app.http, rp.basic_auth(), denied)) == (
            400,
            "access_denied",
            "the request was denied",
        )
        expired = await start_auth_req_id(app.http, rp.basic_auth())
        await rewind(db, expired, 3600)
        assert answer(await poll(app.http, rp.basic_auth(), expired)) == (
            400,
            "expired_token",
            "the request has expired",
        )
        abused = await start_auth_req_id(app.http, rp.basic_auth())
        answers = [answer(await poll(app.http, rp.basic_auth(), abused)) for _ in range(4)]
        # The poll that crosses poll_deny_after ends the request, and says so.
        assert next(a for a in answers if a[1] == "access_denied") == (
            400,
            "access_denied",
            "the request was ended after repeated polling",
        )


async def test_a_held_poll_runs_no_statement_while_it_waits(
    running: RunningApp, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    http = running.http
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    held = asyncio.create_task(poll(http, rp.basic_auth(), auth_req_id, {"Prefer": "wait=25"}))
    await eventually(lambda: poll_is_held(db, running.services.waiters))
    async with db.transaction():
        await db.execute("SELECT 1 FROM auth_requests FOR UPDATE")
        # A poll that kept re-reading the request while it waits would queue behind this
        # lock within moments; one that waits for the decision's wake-up never does.
        await asyncio.sleep(0.5)
        queued = await db.fetchval(
            """SELECT count(*) FROM pg_stat_activity
                WHERE datname = current_database() AND wait_event_type = 'Lock'"""
        )
    assert queued == 0
    await decide(db, auth_req_id, "approved")
    assert (await asyncio.wait_for(held, 12)).status_code == 200
