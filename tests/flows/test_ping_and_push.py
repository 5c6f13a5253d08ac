"""Ping and push token delivery (CIBA §10.2, §10.3), end to end.

The real app on PostgreSQL delivers to a real HTTP receiver on loopback (so
these apps allow insecure URLs, as the setting documents); the user decides
through the real decision path.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from backchannel.db.users import User
from backchannel.key_wrapping import new_kek
from backchannel.oauth.central_revocation import revoke_user
from backchannel.oauth.registration import ClientRegistration, RegistrationError, register_client
from backchannel.settings import Settings
from tests.conftest import RegisteredClient, RunningApp, start_app
from tests.support.ciba import decide, poll, rewind, start_request
from tests.support.receiver import BEARER, NotificationReceiver, run_receiver


@pytest.fixture
def delivering(settings: Settings) -> Settings:
    """Notifications may go to the loopback receiver; failing ones retry quickly."""
    return settings.replace(allow_insecure_urls=True, notification_timeout=1.0)


@pytest.fixture
async def app(delivering: Settings) -> AsyncIterator[RunningApp]:
    async for running in start_app(delivering):
        yield running


def client_for(mode: str) -> Callable[..., Any]:
    @pytest.fixture
    async def make(make_client: Any, receiver: NotificationReceiver) -> RegisteredClient:
        registered: RegisteredClient = await make_client(
            backchannel_token_delivery_mode=mode,
            backchannel_client_notification_endpoint=receiver.url,
        )
        return registered

    return make


pinger = client_for("ping")
pusher = client_for("push")


async def start(http: httpx.AsyncClient, rp: RegisteredClient, **params: Any) -> str:
    response = await start_request(
        http, rp.basic_auth(), client_notification_token=BEARER, **params
    )
    assert response.status_code == 200, response.text
    auth_req_id: str = response.json()["auth_req_id"]
    return auth_req_id


async def notification_row(db: asyncpg.Connection) -> dict[str, Any]:
    row = await db.fetchrow("SELECT * FROM client_notifications")
    assert row is not None
    return dict(row)


async def settled(db: asyncpg.Connection) -> dict[str, Any]:
    """The notification once it has left ``waiting`` and ``queued`` for good."""
    [row] = await settled_all(db, 1)
    return row


async def settled_all(db: asyncpg.Connection, count: int, within: float = 15.0) -> list[Any]:
    """The ``count`` notifications once none is waiting or queued any more."""
    async with asyncio.timeout(within):
        while True:
            rows = await db.fetch("SELECT * FROM client_notifications ORDER BY id")
            if len(rows) == count and all(
                r["status"] in ("sent", "failed", "given_up") for r in rows
            ):
                return [dict(r) for r in rows]
            await asyncio.sleep(0.05)


async def metric(http: httpx.AsyncClient, mode: str, outcome: str) -> float:
    text = (await http.get("/metrics")).text
    line = f'backchannel_notifications_total{{mode="{mode}",outcome="{outcome}"}} '
    for row in text.splitlines():
        if row.startswith(line):
            return float(row.removeprefix(line))
    return 0.0


def half_hash(value: str) -> str:
    return (
        base64.urlsafe_b64encode(hashlib.sha256(value.encode()).digest()[:16]).rstrip(b"=").decode()
    )


# --- ping ------------------------------------------------------------------------------


@pytest.mark.parametrize("decision", ["approved", "denied"])
async def test_ping_after_the_decision_then_the_client_collects_at_the_token_endpoint(
    decision: str,
    app: RunningApp,
    pinger: RegisteredClient,
    receiver: NotificationReceiver,
    db: asyncpg.Connection,
    alice: User,
) -> None:
    auth_req_id = await start(app.http, pinger)
    await decide(db, auth_req_id, decision)  # type: ignore[arg-type]
    [ping] = await receiver.wait_for_count(1)
    assert ping.body == {"auth_req_id": auth_req_id}
    assert ping.authorization == f"Bearer {BEARER}"
    assert ping.content_type == "application/json"
    answer = await poll(app.http, pinger.basic_auth(), auth_req_id)
    if decision == "approved":
        assert answer.status_code == 200, answer.text
    else:
        assert answer.json()["error"] == "access_denied"
    row = await settled(db)
    assert row["status"] == "sent"
    assert row["auth_req_id_sealed"] is None and row["bearer_sealed"] is None


async def test_ping_when_the_request_expires(
    app: RunningApp,
    pinger: RegisteredClient,
    receiver: NotificationReceiver,
    db: asyncpg.Connection,
    alice: User,
) -> None:
    auth_req_id = await start(app.http, pinger)
    await rewind(db, auth_req_id, 301)  # the worker's sweep finds it
    [ping] = await receiver.wait_for_count(1)
    assert ping.body == {"auth_req_id": auth_req_id}
    assert (await poll(app.http, pinger.basic_auth(), auth_req_id)).json()["error"] == (
        "expired_token"
    )
    assert (await notification_row(db))["outcome"] == "expired"


async def test_ping_when_the_users_grants_are_revoked(
    app: RunningApp,
    pinger: RegisteredClient,
    receiver: NotificationReceiver,
    db: asyncpg.Connection,
    alice: User,
) -> None:
    auth_req_id = await start(app.http, pinger)
    await revoke_user(db, alice.user_id, actor="test")
    # Queued in the revocation's own transaction, not left for the housekeeping sweep.
    assert (await notification_row(db))["status"] != "waiting"
    [ping] = await receiver.wait_for_count(1, within=3)
    assert ping.body == {"auth_req_id": auth_req_id}
    row = await notification_row(db)
    assert (row["outcome"], row["denial_reason"]) == ("denied", "revoked")


async def test_a_ping_client_may_still_poll_with_the_same_pacing(
    app: RunningApp, pinger: RegisteredClient, alice: User
) -> None:
    auth_req_id = await start(app.http, pinger)
    first = await poll(app.http, pinger.basic_auth(), auth_req_id)
    assert first.json()["error"] == "authorization_pending"
    assert (await poll(app.http, pinger.basic_auth(), auth_req_id)).json()["error"] == "slow_down"


@pytest.mark.parametrize("token", [None, "", "bad token", "x" * 1025, "abc\n", "abc\r\n"])
async def test_a_ping_request_needs_a_bearer_shaped_notification_token(
    token: str | None,
    app: RunningApp,
    pinger: RegisteredClient,
    db: asyncpg.Connection,
    alice: User,
) -> None:
    response = await start_request(app.http, pinger.basic_auth(), client_notification_token=token)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert await db.fetchval("SELECT count(*) FROM auth_requests") == 0


# --- push ------------------------------------------------------------------------------


async def test_push_delivers_the_token_response_with_the_hashes_of_section_10_3_1(
    app: RunningApp,
    pusher: RegisteredClient,
    receiver: NotificationReceiver,
    db: asyncpg.Connection,
    alice: User,
) -> None:
    auth_req_id = await start(app.http, pusher, scope="openid email offline_access")
    await decide(db, auth_req_id, "approved")
    [push] = await receiver.wait_for_count(1)
    body = push.body
    assert push.authorization == f"Bearer {BEARER}"
    assert body["auth_req_id"] == auth_req_id
    assert body["token_type"] == "Bearer" and body["expires_in"] > 0
    assert {"access_token", "id_token", "refresh_token"} <= set(body)
    keys = KeySet.import_key_set((await app.http.get("/jwks")).json())
    claims = jwt.decode(body["id_token"], keys).claims
    assert claims["urn:openid:params:jwt:claim:auth_req_id"] == auth_req_id
    assert claims["at_hash"] == half_hash(body["access_token"])
    assert claims["urn:openid:params:jwt:claim:rt_hash"] == half_hash(body["refresh_token"])
    assert claims["aud"] == pusher.client_id
    userinfo = await app.http.get(
        "/userinfo", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert userinfo.status_code == 200
    row = await settled(db)
    assert row["status"] == "sent" and row["response_sealed"] is None


async def test_a_push_clients_auth_req_id_is_not_redeemable_at_the_token_endpoint(
    app: RunningApp,
    pusher: RegisteredClient,
    receiver: NotificationReceiver,
    db: asyncpg.Connection,
    alice: User,
) -> None:
    auth_req_id = await start(app.http, pusher)
    await decide(db, auth_req_id, "approved")
    answer = await poll(app.http, pusher.basic_auth(), auth_req_id)
    assert answer.json()["error"] == "unauthorized_client"
    await receiver.wait_for_count(1)
    assert await db.fetchval("SELECT count(*) FROM access_tokens") == 1


@pytest.mark.parametrize(
    ("end", "error", "description"),
    [
        ("denied", "access_denied", "the request was denied"),
        ("not_me", "access_denied", "the user reported this request as not theirs"),
        ("expired", "expired_token", "the request expired before the user decided"),
    ],
)
async def test_push_sends_the_error_when_the_request_does_not_end_approved(
    end: str,
    error: str,
    description: str,
    app: RunningApp,
    pusher: RegisteredClient,
    receiver: NotificationReceiver,
    db: asyncpg.Connection,
    alice: User,
) -> None:
    auth_req_id = await start(app.http, pusher)
    if end == "denied":
        await decide(db, auth_req_id, "denied")
    elif end == "not_me":
        await decide(db, auth_req_id, "denied", reason="not_me")
    else:
        await rewind(db, auth_req_id, 301)
    [push] = await receiver.wait_for_count(1)
    assert push.body["auth_req_id"] == auth_req_id
    assert push.body["error"] == error
    assert push.body["error_description"] == description
    assert "access_token" not in push.body
    assert await db.fetchval("SELECT count(*) FROM access_tokens") == 0


async def test_sealed_values_are_wrapped_under_the_key_encryption_key(
    delivering: Settings,
    pusher: RegisteredClient,
    receiver: NotificationReceiver,
    db: asyncpg.Connection,
    alice: User,
) -> None:
    receiver.answer("hang")
    async for app in start_app(delivering.replace(key_encryption_key=new_kek())):
        auth_req_id = await start(app.http, pusher)
        await decide(db, auth_req_id, "approved")
        await receiver.wait_for_count(1)
        row = await notification_row(db)
        for column in ("auth_req_id_sealed", "bearer_sealed", "response_sealed"):
            assert row[column].startswith("bcwrap1."), column
            assert auth_req_id not in row[column] and BEARER not in row[column]


# --- delivery rules ---------------------------------------------------------------------


async def test_a_failing_endpoint_is_retried_and_the_client_sees_one_delivery(
    app: RunningApp,
    pinger: RegisteredClient,
    receiver: NotificationReceiver,
    db: asyncpg.Connection,
    alice: User,
) -> None:
    receiver.answer(500, 500, 204)
    auth_req_id = await start(app.http, pinger)
    await decide(db, auth_req_id, "approved")
    row = await settled(db)
    assert (row["status"], row["attempts"]) == ("sent", 3)
    assert [r.body for r in receiver.received] == [{"auth_req_id": auth_req_id}] * 3
    assert await metric(app.http, "ping", "retry") == 2
    assert await metric(app.http, "ping", "sent") == 1


async def test_an_endpoint_that_does_not_answer_in_time_is_retried(
    app: RunningApp,
    pinger: RegisteredClient,
    receiver: NotificationReceiver,
    db: asyncpg.Connection,
    alice: User,
) -> None:
    receiver.answer("hang", 204)
    auth_req_id = await start(app.http, pinger)
    await decide(db, auth_req_id, "approved")
    row = await settled(db)
    assert (row["status"], row["attempts"]) == ("sent", 2)
    assert await metric(app.http, "ping", "retry") == 1


@pytest.mark.parametrize("answer", [401, 403, 400])
async def test_a_refusing_endpoint_is_not_retried_and_the_failure_is_audited(
    answer: int,
    app: RunningApp,
    pinger: RegisteredClient,
    receiver: NotificationReceiver,
    db: asyncpg.Connection,
    alice: User,
) -> None:
    receiver.answer(answer)
    auth_req_id = await start(app.http, pinger)
    await decide(db, auth_req_id, "approved")
    row = await settled(db)
    assert (row["status"], row["attempts"], row["last_status"]) == ("failed", 1, answer)
    assert len(receiver.received) == 1
    event = await db.fetchrow("SELECT * FROM audit_events WHERE event = 'notification_failed'")
    assert event is not None and event["detail"]["status"] == answer
    # The client can still collect its tokens by polling.
    assert (await poll(app.http, pinger.basic_auth(), auth_req_id)).status_code == 200


async def test_a_redirect_is_not_followed(
    app: RunningApp,
    pinger: RegisteredClient,
    receiver: NotificationReceiver,
    db: asyncpg.Connection,
    alice: User,
) -> None:
    receiver.answer(("redirect", receiver.url.replace("/cb", "/elsewhere")))
    auth_req_id = await start(app.http, pinger)
    await decide(db, auth_req_id, "approved")
    row = await settled(db)
    assert (row["status"], row["last_status"]) == ("failed", 302)
    assert [r.path for r in receiver.received] == ["/cb"]


async def test_a_push_that_keeps_failing_is_given_up_and_its_tokens_revoked(
    delivering: Settings,
    pusher: RegisteredClient,
    receiver: NotificationReceiver,
    db: asyncpg.Connection,
    alice: User,
) -> None:
    receiver.answer(503)
    async for app in start_app(delivering.replace(notification_give_up_after=10)):
        auth_req_id = await start(app.http, pusher)
        await decide(db, auth_req_id, "approved")
        await receiver.wait_for_count(1)
        # Time passes: the request ended long ago.
        await db.execute("UPDATE client_notifications SET due_at = due_at - interval '1 hour'")
        row = await settled(db)
        assert row["status"] == "given_up" and row["response_sealed"] is None
        assert await db.fetchval("SELECT count(*) FROM access_tokens WHERE revoked_at IS NULL") == 0
        assert (
            await db.fetchval(
                "SELECT count(*) FROM audit_events WHERE event = 'notification_given_up'"
            )
            == 1
        )


async def test_one_slow_client_does_not_hold_up_another(
    delivering: Settings,
    make_client: Any,
    receiver: NotificationReceiver,
    db: asyncpg.Connection,
    alice: User,
) -> None:
    async for other in run_receiver():
        slow = await make_client(
            backchannel_token_delivery_mode="ping",
            backchannel_client_notification_endpoint=receiver.url,
        )
        quick = await make_client(
            backchannel_token_delivery_mode="ping",
            backchannel_client_notification_endpoint=other.url,
        )
        receiver.answer("hang")
        settings = delivering.replace(
            notification_per_client=2, notification_timeout=30.0, fatigue_max_pending=0
        )
        async for app in start_app(settings):
            for _ in range(4):
                await decide(db, await start(app.http, slow), "approved")
            await receiver.wait_for_count(2)
            late = await start(app.http, quick)
            await decide(db, late, "approved")
            [ping] = await other.wait_for_count(1, within=5)
            assert ping.body == {"auth_req_id": late}
            assert len(receiver.received) == 2  # the per-client bound held the others back


# --- SSRF -----------------------------------------------------------------------------


def name_for_a_private_address() -> str:
    """A host name this machine resolves to a loopback or private address."""
    for name in (socket.gethostname(), "ip6-localhost", "ip6-loopback"):
        try:
            infos = socket.getaddrinfo(name, None)
        except OSError:
            continue
        if infos:
            return name
    raise AssertionError("no host name here resolves to a non-public address")


@pytest.mark.parametrize("host", ["10.0.0.1", "127.0.0.1", "private-name"])
async def test_a_notification_endpoint_on_a_private_address_is_refused_at_registration(
    host: str, settings: Settings, db: asyncpg.Connection
) -> None:
    if host == "private-name":
        host = name_for_a_private_address()
    registration = ClientRegistration(
        name="Intranet probe",
        backchannel_token_delivery_mode="ping",
        backchannel_client_notification_endpoint=f"https://{host}/cb",
    )
    with pytest.raises(RegistrationError, match="backchannel_client_notification_endpoint"):
        await register_client(db, registration, settings)
    assert await db.fetchval("SELECT count(*) FROM clients") == 0


@pytest.mark.parametrize("host", ["10.0.0.1", "private-name"])
async def test_a_notification_endpoint_on_a_private_address_is_refused_when_sending(
    host: str, settings: Settings, make_client: Any, db: asyncpg.Connection, alice: User
) -> None:
    if host == "private-name":
        host = name_for_a_private_address()
    # Stored as if the name had resolved to a public address when it was registered.
    rp = await make_client(
        backchannel_token_delivery_mode="ping",
        backchannel_client_notification_endpoint=f"https://{host}/cb",
    )
    async for app in start_app(settings):
        auth_req_id = await start(app.http, rp)
        await decide(db, auth_req_id, "approved")
        row = await settled(db)
        assert row["status"] == "failed" and row["attempts"] == 1
        assert "endpoint refused" in row["last_error"]


# --- replicas and crashes ------------------------------------------------------------------


async def test_two_replicas_send_one_notification_for_one_decision(
    delivering: Settings,
    pinger: RegisteredClient,
    receiver: NotificationReceiver,
    db: asyncpg.Connection,
    alice: User,
) -> None:
    settings = delivering.replace(fatigue_max_pending=0)
    async for first in start_app(settings):
        async for second in start_app(settings):
            ids = [await start(first.http, pinger) for _ in range(5)]
            for auth_req_id in ids:
                await decide(db, auth_req_id, "approved")
            rows = await settled_all(db, 5)
            assert {r["status"] for r in rows} == {"sent"}
            assert sorted(r.body["auth_req_id"] for r in receiver.received) == sorted(ids)
            assert second.services is not first.services


async def test_a_push_resent_after_the_sending_worker_died_carries_the_same_tokens(
    delivering: Settings,
    pusher: RegisteredClient,
    receiver: NotificationReceiver,
    db: asyncpg.Connection,
    alice: User,
) -> None:
    receiver.answer("hang", 204)
    settings = delivering.replace(notification_timeout=60.0)
    async for app in start_app(settings):
        auth_req_id = await start(app.http, pusher)
        await decide(db, auth_req_id, "approved")
        [first] = await receiver.wait_for_count(1)
    # The replica is gone mid-send; its lease runs out.
    await db.execute("UPDATE client_notifications SET leased_until = now()")
    async for _replacement in start_app(settings):
        received = await receiver.wait_for_count(2, within=15)
        row = await settled(db)
    assert row["status"] == "sent"
    assert received[1].body == first.body
    assert first.body["auth_req_id"] == auth_req_id
    assert await db.fetchval("SELECT count(*) FROM access_tokens") == 1
    assert await db.fetchval("SELECT count(*) FROM refresh_tokens") <= 1


async def test_a_notification_host_that_does_not_resolve_yet_is_accepted_at_registration(
    settings: Settings, db: asyncpg.Connection
) -> None:
    registration = ClientRegistration(
        name="Not yet in DNS",
        backchannel_token_delivery_mode="ping",
        backchannel_client_notification_endpoint="https://pos.not-yet.invalid/cb",
    )
    registered = await register_client(db, registration, settings)
    assert registered.client.backchannel_token_delivery_mode == "ping"
