"""The push outbox end to end: prompts queued with a request reach every phone of the
user through the local push service, decisions and the sweep withdraw them, and
failures, back-off, leases and replicas behave."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest

from backchannel.authenticator.messages import push_topic
from backchannel.authenticator.prompts import compose_prompt
from backchannel.db.auth_requests import NewAuthRequest, QueuedPrompt, insert_auth_request
from backchannel.db.pool import ConnectionPool, create_pool
from backchannel.db.push_outbox import (
    OUTBOX_CHANNEL,
    claim_due_messages,
    enqueue_message,
    mark_sent,
)
from backchannel.db.users import User
from backchannel.delivery.vapid import ensure_vapid_key, rotate_vapid_key
from backchannel.delivery.worker import OutboxWorker
from backchannel.oauth.secrets import hash_secret, new_secret
from backchannel.settings import Settings
from tests.conftest import ISSUER, RegisteredClient
from tests.support import factories
from tests.support.ciba import audit_events, decide, poll, rewind, start_auth_req_id
from tests.support.push_service import (
    LocalPushService,
    TestSubscription,
    insert_device,
    run_push_service,
)
from tests.support.waiting import eventually

BINDING_MESSAGE = "Pay €80 at 珈琲店 ☕️ #14"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        issuer=ISSUER,
        database_url=database_url,
        db_pool_min=1,
        db_pool_max=10,
        allow_insecure_urls=True,
        push_allow_loopback=True,
        push_timeout=1.0,
    )


@pytest.fixture
async def push_service() -> AsyncIterator[LocalPushService]:
    async with run_push_service() as service:
        yield service


Workers = Callable[..., Awaitable[OutboxWorker]]


@pytest.fixture
async def start_worker(settings: Settings) -> AsyncIterator[Workers]:
    """Start outbox workers outside an app, each with its own pool (a replica each)."""
    started: list[tuple[OutboxWorker, ConnectionPool, aiohttp.ClientSession]] = []

    async def start(**options: Any) -> OutboxWorker:
        worker_settings = settings.replace(**options.pop("settings", {}))
        pool = await create_pool(settings.database_url or "", min_size=1, max_size=5)
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        options.setdefault("poll_interval", 0.2)
        options.setdefault("sweep_interval", 0.2)
        worker = OutboxWorker(pool, http, worker_settings, **options)
        started.append((worker, pool, http))
        await worker.start()
        return worker

    yield start
    for worker, pool, http in started:
        await worker.stop()
        await http.close()
        await pool.close()


async def add_phone(
    db: asyncpg.Connection,
    user: User,
    service: LocalPushService,
    behaviour: str = "normal",
    **options: Any,
) -> tuple[str, TestSubscription]:
    vapid = await ensure_vapid_key(db)
    options.setdefault("server_key", vapid.public_key)
    subscription = service.subscribe(behaviour, **options)
    device_id = await insert_device(db, user.user_id, subscription, vapid_kid=vapid.kid)
    return device_id, subscription


async def outbox(db: asyncpg.Connection, **where: Any) -> list[dict[str, Any]]:
    rows = await db.fetch("SELECT * FROM push_outbox ORDER BY id")
    return [dict(r) for r in rows if all(r[k] == v for k, v in where.items())]


async def wait_for_rows(
    db: asyncpg.Connection, condition: Callable[[list[dict[str, Any]]], bool], within: float = 10
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    while True:
        rows = await outbox(db)
        if condition(rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"outbox never reached the expected state: {rows}")
        await asyncio.sleep(0.05)


def count_rounds(worker: OutboxWorker) -> list[None]:
    """One entry per round ``worker`` completes from now on."""
    rounds: list[None] = []
    run_round = worker.run_round

    async def counted() -> None:
        await run_round()
        rounds.append(None)

    worker.run_round = counted  # type: ignore[method-assign]
    return rounds


async def queue_dismiss(
    db: asyncpg.Connection, device_id: str, ref: str, deliver_before: datetime | None = None
) -> int:
    """A message not tied to a request's lifecycle, for the worker mechanics."""
    if deliver_before is None:
        deliver_before = await db.fetchval("SELECT now() + interval '5 minutes'")
    return await enqueue_message(
        db,
        device_id=device_id,
        auth_request_id=None,
        kind="dismiss",
        topic=push_topic(ref),
        payload={"type": "dismiss", "ref": ref},
        deliver_before=deliver_before,
    )


def ref_of(auth_req_id: str) -> str:
    return hash_secret(auth_req_id).hex()


# --- prompts and dismisses through the app --------------------------------------------------


async def test_a_request_prompts_every_phone_of_the_user_with_the_contract_message(
    running: Any,
    rp: RegisteredClient,
    alice: User,
    db: asyncpg.Connection,
    push_service: LocalPushService,
) -> None:
    phones = [await add_phone(db, alice, push_service) for _ in range(2)]
    other_user_phone = await add_phone(db, await _bob(db), push_service)
    started = time.monotonic()

    auth_req_id = await start_auth_req_id(
        running.http,
        rp.basic_auth(),
        binding_message=BINDING_MESSAGE,
        scope="openid email",
    )

    await push_service.wait_until(lambda: len(push_service.received) >= 2)
    assert push_service.errors == []
    request = await db.fetchrow(
        "SELECT id, expires_at, device_challenge FROM auth_requests WHERE id_hash = $1",
        hash_secret(auth_req_id),
    )
    assert request is not None
    ref = ref_of(auth_req_id)
    expected = {
        "type": "prompt",
        "ref": ref,
        "client_id": rp.client_id,
        "client_name": "Acme Coffee",
        "binding_message": BINDING_MESSAGE,
        "scope": ["openid", "email"],
        "expires_at": request["expires_at"].strftime("%Y-%m-%dT%H:%M:%SZ"),
        "challenge": request["device_challenge"],
        "user_verification": "none",
    }
    assert request["device_challenge"] and len(request["device_challenge"]) >= 20
    for _device_id, subscription in phones:
        [message] = push_service.received_by(subscription)
        assert message.payload == expected
        assert message.urgency == "high"
        assert message.topic == push_topic(ref) and len(message.topic) == 32
        lifetime = 300 - (message.at - started)
        assert lifetime - 3 <= message.ttl <= 300
        assert message.vapid_claims["aud"] == push_service.origin
        assert message.vapid_claims["sub"] == running.services.settings.vapid_subject
    assert push_service.received_by(other_user_phone[1]) == []
    await wait_for_rows(db, lambda rows: all(r["status"] == "sent" for r in rows))
    sent = await audit_events(db, "prompt_sent")
    assert sorted(e["device_id"] for e in sent) == sorted(d for d, _ in phones)
    assert {e["auth_request_id"] for e in sent} == {request["id"]}


async def test_a_decision_dismisses_the_prompt_on_the_other_phones(
    running: Any,
    rp: RegisteredClient,
    alice: User,
    db: asyncpg.Connection,
    push_service: LocalPushService,
) -> None:
    (deciding, deciding_sub), (other, other_sub) = [
        await add_phone(db, alice, push_service) for _ in range(2)
    ]
    auth_req_id = await start_auth_req_id(running.http, rp.basic_auth())
    await push_service.wait_until(lambda: len(push_service.received) == 2)

    await decide(db, auth_req_id, "approved", device_id=deciding)

    await push_service.wait_until(lambda: len(push_service.received_by(other_sub)) == 2)
    dismiss = push_service.received_by(other_sub)[1]
    assert dismiss.payload == {"type": "dismiss", "ref": ref_of(auth_req_id)}
    assert dismiss.topic == push_topic(ref_of(auth_req_id))
    assert dismiss.urgency == "high" and dismiss.ttl > 0
    # Every queued push has been sent: a dismiss queued for the deciding phone would be in.
    await wait_for_rows(db, lambda rows: all(r["status"] == "sent" for r in rows))
    assert [m.payload["type"] for m in push_service.received_by(deciding_sub)] == ["prompt"]
    request = await db.fetchrow(
        "SELECT prompts_withdrawn_at FROM auth_requests WHERE id_hash = $1",
        hash_secret(auth_req_id),
    )
    assert request is not None and request["prompts_withdrawn_at"] is not None
    assert (await poll(running.http, rp.basic_auth(), auth_req_id)).status_code == 200
    await wait_for_rows(db, lambda rows: all(r["status"] == "sent" for r in rows))
    assert [e["device_id"] for e in await audit_events(db, "dismiss_sent")] == [other]


async def test_an_expired_request_s_prompts_are_dismissed_by_the_sweep(
    running: Any,
    rp: RegisteredClient,
    alice: User,
    db: asyncpg.Connection,
    push_service: LocalPushService,
) -> None:
    _device, sub = await add_phone(db, alice, push_service)
    auth_req_id = await start_auth_req_id(running.http, rp.basic_auth())
    await push_service.wait_until(lambda: len(push_service.received_by(sub)) == 1)

    await rewind(db, auth_req_id, 301)

    await push_service.wait_until(lambda: len(push_service.received_by(sub)) == 2, within=15)
    assert push_service.received_by(sub)[1].payload == {
        "type": "dismiss",
        "ref": ref_of(auth_req_id),
    }


async def test_a_request_denied_for_poll_abuse_is_withdrawn_by_the_sweep(
    running: Any,
    rp: RegisteredClient,
    alice: User,
    db: asyncpg.Connection,
    push_service: LocalPushService,
) -> None:
    _device, sub = await add_phone(db, alice, push_service)
    auth_req_id = await start_auth_req_id(running.http, rp.basic_auth())
    await push_service.wait_until(lambda: len(push_service.received_by(sub)) == 1)

    await db.execute(
        """UPDATE auth_requests SET status = 'denied', denial_reason = 'poll_abuse',
                  decided_at = now() WHERE id_hash = $1""",
        hash_secret(auth_req_id),
    )

    await push_service.wait_until(lambda: len(push_service.received_by(sub)) == 2, within=15)
    assert push_service.received_by(sub)[1].payload["type"] == "dismiss"


async def test_a_dead_subscription_is_cleared_audited_and_not_used_again(
    running: Any,
    rp: RegisteredClient,
    alice: User,
    db: asyncpg.Connection,
    push_service: LocalPushService,
) -> None:
    dead, dead_sub = await add_phone(db, alice, push_service, "gone")
    _alive, alive_sub = await add_phone(db, alice, push_service)
    await start_auth_req_id(running.http, rp.basic_auth())
    await push_service.wait_until(lambda: len(push_service.received_by(alive_sub)) == 1)
    await wait_for_rows(db, lambda rows: all(r["status"] != "queued" for r in rows))

    device = await db.fetchrow("SELECT * FROM devices WHERE device_id = $1", dead)
    assert device is not None
    assert (device["push_endpoint"], device["push_p256dh"], device["push_auth"]) == (None,) * 3
    assert device["removed_at"] is None
    [gone] = await audit_events(db, "push_subscription_gone")
    assert gone["device_id"] == dead and gone["detail"]["status"] == 410
    [failed] = await audit_events(db, "delivery_failed")
    assert failed["device_id"] == dead and failed["detail"]["reason"] == "gone"
    assert [r["status"] for r in await outbox(db, device_id=dead)] == ["failed"]

    await start_auth_req_id(running.http, rp.basic_auth())
    await push_service.wait_until(lambda: len(push_service.received_by(alive_sub)) == 2)
    # Every queued push has been dealt with: one queued for the dead phone would be too.
    await wait_for_rows(db, lambda rows: all(r["status"] in ("sent", "failed") for r in rows))
    assert len(push_service.attempts_at(dead_sub)) == 1
    assert len(await outbox(db, device_id=dead)) == 1


async def test_an_endpoint_off_the_allow_list_is_never_contacted_and_fails_audited(
    alice: User,
    db: asyncpg.Connection,
    push_service: LocalPushService,
    start_worker: Workers,
) -> None:
    device, _sub = await add_phone(db, alice, push_service)
    message_id = await queue_dismiss(db, device, "ab" * 32)

    await start_worker(settings={"push_allow_loopback": False})

    [row] = await wait_for_rows(db, lambda rows: rows[0]["status"] != "queued")
    assert (row["id"], row["status"]) == (message_id, "failed")
    assert row["last_error"].startswith("endpoint refused")
    assert push_service.attempts == []
    [failed] = await audit_events(db, "delivery_failed")
    assert failed["device_id"] == device
    assert failed["detail"]["reason"] == "endpoint_refused"


# --- back-off, expiry, leases, replicas ---------------------------------------------------


async def test_a_busy_push_service_is_retried_after_its_retry_after(
    alice: User, db: asyncpg.Connection, push_service: LocalPushService, start_worker: Workers
) -> None:
    device, sub = await add_phone(db, alice, push_service, "busy", retry_after="2")
    await queue_dismiss(db, device, "cd" * 32)

    await start_worker()

    await push_service.wait_until(lambda: len(push_service.received_by(sub)) == 1, within=10)
    first, second = push_service.attempts_at(sub)
    assert (first.status, second.status) == (503, 201)
    assert second.at - first.at >= 1.9
    [row] = await wait_for_rows(db, lambda rows: rows[0]["status"] != "queued")
    assert (row["status"], row["attempts"]) == ("sent", 2)


async def test_a_push_service_that_does_not_answer_in_time_is_retried(
    alice: User, db: asyncpg.Connection, push_service: LocalPushService, start_worker: Workers
) -> None:
    device, sub = await add_phone(db, alice, push_service, "slow", slow_seconds=3)
    await queue_dismiss(db, device, "ef" * 32)

    await start_worker(settings={"push_timeout": 0.5})

    await push_service.wait_until(lambda: len(push_service.received_by(sub)) == 1, within=10)
    assert [a.status for a in push_service.attempts_at(sub)] == ["timeout", 201]
    [row] = await wait_for_rows(db, lambda rows: rows[0]["status"] != "queued")
    assert (row["status"], row["attempts"]) == ("sent", 2)


async def test_attempts_stop_at_the_configured_maximum(
    alice: User, db: asyncpg.Connection, push_service: LocalPushService, start_worker: Workers
) -> None:
    device, sub = await add_phone(db, alice, push_service, "slow", slow_seconds=3)
    await queue_dismiss(db, device, "ef" * 32)

    await start_worker(settings={"push_timeout": 0.3, "push_max_attempts": 1})

    [row] = await wait_for_rows(db, lambda rows: rows[0]["status"] != "queued")
    assert (row["status"], row["attempts"]) == ("failed", 1)
    [failed] = await audit_events(db, "delivery_failed")
    assert failed["detail"]["reason"] == "attempts_exhausted"
    assert len(push_service.attempts_at(sub)) == 1


async def test_a_message_past_its_deliver_before_is_dropped_unsent(
    alice: User, db: asyncpg.Connection, push_service: LocalPushService, start_worker: Workers
) -> None:
    device, _sub = await add_phone(db, alice, push_service)
    past = await db.fetchval("SELECT now() - interval '1 second'")
    await queue_dismiss(db, device, "01" * 32, deliver_before=past)

    await start_worker()

    [row] = await wait_for_rows(db, lambda rows: rows[0]["status"] != "queued")
    assert (row["status"], row["last_error"], row["attempts"]) == ("dropped", "expired", 0)
    assert push_service.attempts == []
    [failed] = await audit_events(db, "delivery_failed")
    assert (failed["device_id"], failed["detail"]["reason"]) == (device, "expired")


async def test_a_message_to_a_device_without_a_subscription_is_skipped_not_failed(
    alice: User, db: asyncpg.Connection, push_service: LocalPushService, start_worker: Workers
) -> None:
    # Enrolled without push (or its subscription was cleared after the message was queued).
    pushless = await insert_device(db, alice.user_id, None)
    device, sub = await add_phone(db, alice, push_service)
    skipped = await queue_dismiss(db, pushless, "03" * 32)
    sent = await queue_dismiss(db, device, "04" * 32)

    await start_worker()

    rows = await wait_for_rows(db, lambda rows: all(r["status"] != "queued" for r in rows))
    by_id = {r["id"]: r for r in rows}
    assert (by_id[skipped]["status"], by_id[skipped]["last_error"]) == (
        "dropped",
        "no_subscription",
    )
    assert by_id[skipped]["attempts"] == 0, "never leased, never tried"
    assert by_id[sent]["status"] == "sent"
    assert [a.status for a in push_service.attempts_at(sub)] == [201]
    assert len(push_service.attempts) == 1
    # A phone without push is not a delivery failure: it fetches its requests itself.
    assert await audit_events(db, "delivery_failed") == []


async def test_a_retry_that_would_come_too_late_drops_the_message(
    alice: User, db: asyncpg.Connection, push_service: LocalPushService, start_worker: Workers
) -> None:
    device, sub = await add_phone(db, alice, push_service, "busy", retry_after="30")
    soon = await db.fetchval("SELECT now() + interval '10 seconds'")
    await queue_dismiss(db, device, "02" * 32, deliver_before=soon)

    await start_worker()

    [row] = await wait_for_rows(db, lambda rows: rows[0]["status"] != "queued")
    assert row["status"] == "dropped"
    assert [a.status for a in push_service.attempts_at(sub)] == [503]


async def test_a_message_leased_by_a_dead_worker_is_sent_once_its_lease_ends(
    alice: User, db: asyncpg.Connection, push_service: LocalPushService, start_worker: Workers
) -> None:
    device, sub = await add_phone(db, alice, push_service)
    await queue_dismiss(db, device, "03" * 32)
    # A worker leases the message and dies before sending or recording anything.
    [leased] = await claim_due_messages(db, limit=10, lease_seconds=1.5)
    leased_at = time.monotonic()

    await start_worker()

    await push_service.wait_until(lambda: len(push_service.received_by(sub)) == 1, within=10)
    assert push_service.received_by(sub)[0].at - leased_at >= 1.3
    [row] = await wait_for_rows(db, lambda rows: rows[0]["status"] != "queued")
    assert (row["id"], row["status"], row["attempts"]) == (leased.id, "sent", 2)


async def test_a_lease_and_a_send_s_record_commit_without_waiting_for_the_wal_flush(
    alice: User, db: asyncpg.Connection, push_service: LocalPushService
) -> None:
    """Losing either in a crash means only that the message is sent again."""
    device, _sub = await add_phone(db, alice, push_service)
    await queue_dismiss(db, device, "04" * 32)
    await db.execute("SET synchronous_commit = on")
    try:
        async with db.transaction():
            [leased] = await claim_due_messages(db, limit=10, lease_seconds=30)
            assert await db.fetchval("SHOW synchronous_commit") == "off"
        assert await db.fetchval("SHOW synchronous_commit") == "on"
        async with db.transaction():
            assert await mark_sent(db, leased, 201)
            assert await db.fetchval("SHOW synchronous_commit") == "off"
        assert await db.fetchval("SHOW synchronous_commit") == "on"
    finally:
        await db.execute("RESET synchronous_commit")


async def test_a_stopped_worker_leaves_its_unsent_messages_to_another(
    alice: User, db: asyncpg.Connection, push_service: LocalPushService, start_worker: Workers
) -> None:
    device, sub = await add_phone(db, alice, push_service, "slow", slow_seconds=3)
    await queue_dismiss(db, device, "04" * 32)
    first = await start_worker(lease_seconds=1.0, settings={"push_timeout": 5.0})
    await push_service.wait_until(lambda: len(push_service.attempts_at(sub)) == 1)

    await first.stop(grace=0.1)  # mid-send: cancelled, nothing recorded
    await start_worker()

    await push_service.wait_until(lambda: len(push_service.received_by(sub)) == 1, within=10)
    [row] = await wait_for_rows(db, lambda rows: rows[0]["status"] != "queued")
    assert row["status"] == "sent"


async def test_two_workers_on_one_database_send_each_message_exactly_once(
    alice: User, db: asyncpg.Connection, push_service: LocalPushService, start_worker: Workers
) -> None:
    phones = [await add_phone(db, alice, push_service) for _ in range(4)]
    refs = [f"{n:064x}" for n in range(60)]
    for n, ref in enumerate(refs):
        await queue_dismiss(db, phones[n % 4][0], ref)

    workers = await asyncio.gather(
        start_worker(settings={"outbox_batch_size": 7}),
        start_worker(settings={"outbox_batch_size": 7}),
    )
    rounds = [count_rounds(worker) for worker in workers]

    await push_service.wait_until(lambda: len(push_service.received) >= 60, within=20)
    await wait_for_rows(db, lambda rows: all(r["status"] == "sent" for r in rows))
    # Room for any duplicate to show up: each worker claims twice more (a round that
    # starts after every message was sent), then stops, letting every send it began end.
    seen = [len(r) for r in rounds]

    async def both_claimed_again() -> bool:
        return all(len(r) >= n + 2 for r, n in zip(rounds, seen, strict=True))

    await eventually(both_claimed_again)
    await asyncio.gather(*(worker.stop(grace=10) for worker in workers))
    assert [r["attempts"] for r in await outbox(db)] == [1] * 60, "each message leased once"
    assert sorted(m.payload["ref"] for m in push_service.received) == sorted(refs)
    assert len(push_service.attempts) == 60
    assert len(await audit_events(db, "dismiss_sent")) == 60


async def test_queueing_wakes_the_workers_through_notify(db: asyncpg.Connection) -> None:
    woken = asyncio.Event()
    await db.add_listener(OUTBOX_CHANNEL, lambda *_: woken.set())
    user = await _bob(db)
    async with run_push_service() as service:
        device, _sub = await add_phone(db, user, service)
    await queue_dismiss(db, device, "05" * 32)
    await asyncio.wait_for(woken.wait(), 5)


async def test_a_device_keeps_getting_pushes_signed_with_the_key_it_subscribed_with(
    alice: User, db: asyncpg.Connection, push_service: LocalPushService, start_worker: Workers
) -> None:
    old_phone, old_sub = await add_phone(db, alice, push_service)
    new_key = await rotate_vapid_key(db)
    new_sub = push_service.subscribe(server_key=new_key.public_key)
    new_phone = await insert_device(db, alice.user_id, new_sub, vapid_kid=new_key.kid)
    await queue_dismiss(db, old_phone, "06" * 32)
    await queue_dismiss(db, new_phone, "07" * 32)

    await start_worker()

    await push_service.wait_until(lambda: len(push_service.received) == 2)
    assert push_service.errors == []  # each was signed with its subscription's key
    assert push_service.received_by(old_sub)[0].vapid_key == old_sub.server_key
    assert push_service.received_by(new_sub)[0].vapid_key == new_key.public_key


# --- withdrawal rules (no worker) -------------------------------------------------------


async def test_a_decision_before_any_send_drops_the_prompts_and_queues_no_dismiss(
    rp: RegisteredClient,
    alice: User,
    db: asyncpg.Connection,
    push_service: LocalPushService,
) -> None:
    for _ in range(2):
        await add_phone(db, alice, push_service)
    auth_req_id = await _insert_request(db, rp, alice)

    await decide(db, auth_req_id, "denied")

    rows = await outbox(db)
    assert [(r["kind"], r["status"], r["last_error"]) for r in rows] == [
        ("prompt", "dropped", "withdrawn")
    ] * 2


async def test_removed_devices_and_devices_without_subscription_get_no_prompt(
    rp: RegisteredClient,
    alice: User,
    db: asyncpg.Connection,
    push_service: LocalPushService,
) -> None:
    active, _ = await add_phone(db, alice, push_service)
    removed, _ = await add_phone(db, alice, push_service)
    await db.execute("UPDATE devices SET removed_at = now() WHERE device_id = $1", removed)
    await insert_device(db, alice.user_id, None)

    await _insert_request(db, rp, alice)

    assert [(r["device_id"], r["kind"]) for r in await outbox(db)] == [(active, "prompt")]


# --- helpers --------------------------------------------------------------------------


async def _bob(db: asyncpg.Connection) -> User:
    return await factories.create_user(db, email="bob@example.com")


async def _insert_request(db: asyncpg.Connection, rp: RegisteredClient, user: User) -> str:
    """A new request, stored by the statement /bc-authorize uses, with no worker running."""
    auth_req_id = new_secret()
    id_hash = hash_secret(auth_req_id)
    expires_at = datetime.now(UTC) + timedelta(seconds=300)
    prompt = compose_prompt(
        ref=id_hash.hex(),
        client_id=rp.client_id,
        client_name=rp.client.name,
        binding_message=None,
        scope=("openid",),
        expires_at=expires_at,
        number_matching=False,
    )
    await insert_auth_request(
        db,
        NewAuthRequest(
            id_hash=id_hash,
            client_id=rp.client_id,
            user_id=user.user_id,
            scope=("openid",),
            acr_values=None,
            binding_message=None,
            delivery_mode="poll",
            requested_expiry=None,
            expires_at=expires_at,
            poll_interval=5,
            device_challenge=prompt.challenge,
        ),
        QueuedPrompt(prompt.topic, prompt.payload, prompt.withdrawal),
        {},
    )
    return auth_req_id


async def test_a_backlog_larger_than_a_batch_drains_without_waiting_for_the_clock(
    alice: User, db: asyncpg.Connection, push_service: LocalPushService, start_worker: Workers
) -> None:
    phone, _sub = await add_phone(db, alice, push_service)
    refs = [f"{n:064x}" for n in range(60)]
    for ref in refs:
        await queue_dismiss(db, phone, ref)
    started = time.monotonic()
    # Six batches; with a 30 s clock, only refilling as sends finish can finish in time.
    await start_worker(settings={"outbox_batch_size": 10}, poll_interval=30)
    await push_service.wait_until(lambda: len(push_service.received) >= 60, within=10)
    assert time.monotonic() - started < 10
