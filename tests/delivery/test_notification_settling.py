"""Recording how notification attempts ended: many in one statement, each row guarded
by its own lease, each ending audited; an attempt whose outcome was never recorded is
made again."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from backchannel.db.client_notifications import (
    NotificationJob,
    Settlement,
    claim_notifications,
    queue_notification,
    settle_notifications,
)
from backchannel.db.pool import connect
from backchannel.db.users import User
from backchannel.settings import Settings
from tests.conftest import RegisteredClient, start_app
from tests.support.ciba import audit_events, decide, start_auth_req_id
from tests.support.receiver import BEARER, NotificationReceiver


@pytest.fixture
def delivering(settings: Settings) -> Settings:
    return settings.replace(allow_insecure_urls=True, fatigue_max_pending=0, fatigue_max_prompts=0)


@pytest.fixture
async def pinger(make_client: Any, receiver: NotificationReceiver) -> RegisteredClient:
    registered: RegisteredClient = await make_client(
        backchannel_token_delivery_mode="ping",
        backchannel_client_notification_endpoint=receiver.url,
    )
    return registered


async def queued_jobs(
    settings: Settings, rp: RegisteredClient, db: asyncpg.Connection, count: int
) -> list[NotificationJob]:
    """``count`` ping notifications of approved requests, leased (by this test, as a
    worker would) once no app runs any more."""
    async for app in start_app(settings):
        for _ in range(count):
            await start_auth_req_id(app.http, rp.basic_auth(), client_notification_token=BEARER)
    for row in await db.fetch("SELECT auth_request_id FROM client_notifications ORDER BY id"):
        assert await queue_notification(db, row["auth_request_id"], "approved")
    jobs = await claim_notifications(
        db, limit=count, per_client=count, sending={}, lease_seconds=60
    )
    assert len(jobs) == count
    return jobs


async def all_sent(db: asyncpg.Connection) -> None:
    async with asyncio.timeout(10):
        while True:
            if not await db.fetchval(
                "SELECT count(*) FROM client_notifications WHERE status <> 'sent'"
            ):
                return
            await asyncio.sleep(0.05)


async def rows(db: asyncpg.Connection) -> dict[int, dict[str, Any]]:
    return {r["id"]: dict(r) for r in await db.fetch("SELECT * FROM client_notifications")}


async def test_every_ending_of_a_batch_is_recorded_in_one_statement_and_audited(
    delivering: Settings, pinger: RegisteredClient, db: asyncpg.Connection, alice: User
) -> None:
    sent, retry, failed, given_up = await queued_jobs(delivering, pinger, db, 4)
    settled = await settle_notifications(
        db,
        [
            Settlement(sent, "sent", 204),
            Settlement(retry, "retry", 503, "HTTP 503", delay=30.0),
            Settlement(failed, "failed", 401, "HTTP 401"),
            Settlement(given_up, "given_up", None, "no answer within 10 s"),
        ],
    )
    assert {i: s.status for i, s in settled.items()} == {
        sent.id: "sent",
        retry.id: "queued",
        failed.id: "failed",
        given_up.id: "given_up",
    }
    after = await rows(db)
    assert after[sent.id]["sent_at"] is not None and after[sent.id]["last_status"] == 204
    # A retry stays queued, leased by nobody, due later, and keeps what it must send.
    waiting = after[retry.id]
    assert waiting["leased_until"] is None and waiting["bearer_sealed"] is not None
    assert waiting["auth_req_id_sealed"] is not None
    later = await db.fetchval("SELECT $1::timestamptz - now()", waiting["next_attempt_at"])
    assert 25 < later.total_seconds() <= 30
    # Every other ending erases the sealed values.
    for job in (sent, failed, given_up):
        row = after[job.id]
        assert row["auth_req_id_sealed"] is None and row["bearer_sealed"] is None
        assert row["leased_until"] is None
    assert (after[failed.id]["last_status"], after[failed.id]["last_error"]) == (401, "HTTP 401")
    audited = {
        e["event"]: e for e in await audit_events(db) if e["event"].startswith("notification_")
    }
    assert set(audited) == {"notification_sent", "notification_failed", "notification_given_up"}
    assert audited["notification_failed"]["auth_request_id"] == failed.auth_request_id
    assert audited["notification_failed"]["detail"] == {
        "mode": "ping",
        "attempts": 1,
        "status": 401,
        "error": "HTTP 401",
        "outcome": "approved",
    }
    assert audited["notification_given_up"]["detail"]["status"] is None


async def test_an_attempt_whose_lease_was_lost_is_left_alone_while_the_others_are_recorded(
    delivering: Settings, pinger: RegisteredClient, db: asyncpg.Connection, alice: User
) -> None:
    kept, lost = await queued_jobs(delivering, pinger, db, 2)
    # The lease on ``lost`` ran out and another worker leased it again.
    await db.execute("UPDATE client_notifications SET leased_until = now() WHERE id = $1", lost.id)
    [again] = await claim_notifications(db, limit=5, per_client=5, sending={}, lease_seconds=60)
    assert (again.id, again.attempts) == (lost.id, 2)
    settled = await settle_notifications(
        db, [Settlement(kept, "sent", 204), Settlement(lost, "failed", 400, "HTTP 400")]
    )
    assert set(settled) == {kept.id}
    after = await rows(db)
    assert after[kept.id]["status"] == "sent"
    assert (after[lost.id]["status"], after[lost.id]["attempts"]) == ("queued", 2)
    assert after[lost.id]["leased_until"] is not None and after[lost.id]["bearer_sealed"]
    events = [e["event"] for e in await audit_events(db) if e["event"].startswith("notification_")]
    assert events == ["notification_sent"]


async def test_many_pings_answered_at_once_are_each_recorded_sent_once(
    delivering: Settings,
    pinger: RegisteredClient,
    receiver: NotificationReceiver,
    db: asyncpg.Connection,
    alice: User,
) -> None:
    async for app in start_app(delivering.replace(notification_per_client=40)):
        ids = [
            await start_auth_req_id(app.http, pinger.basic_auth(), client_notification_token=BEARER)
            for _ in range(30)
        ]
        for auth_req_id in ids:
            await decide(db, auth_req_id, "approved")
        await receiver.wait_for_count(30)
        await all_sent(db)
    assert sorted(r.body["auth_req_id"] for r in receiver.received) == sorted(ids)
    sent = [e for e in await audit_events(db) if e["event"] == "notification_sent"]
    assert len(sent) == 30
    assert await db.fetchval("SELECT max(attempts) FROM client_notifications") == 1


async def test_a_ping_whose_outcome_was_not_recorded_when_its_server_stopped_is_sent_again(
    delivering: Settings,
    pinger: RegisteredClient,
    receiver: NotificationReceiver,
    db: asyncpg.Connection,
    database_url: str,
    alice: User,
) -> None:
    blocker = await connect(database_url)
    try:
        async for app in start_app(delivering):
            auth_req_id = await start_auth_req_id(
                app.http, pinger.basic_auth(), client_notification_token=BEARER
            )
            gate = asyncio.Event()
            receiver.answer(gate, 204)
            await decide(db, auth_req_id, "approved")
            await receiver.wait_for_count(1)  # leased and sent; the answer is held
            # The outcome cannot be written while this transaction holds the row.
            holding = blocker.transaction()
            await holding.start()
            await blocker.execute("SELECT 1 FROM client_notifications FOR UPDATE")
            gate.set()
            await settle_is_blocked(db)
        # The server is gone; the row is still leased for the attempt it made.
        await blocker.execute("UPDATE client_notifications SET leased_until = now()")
        await holding.commit()
    finally:
        await blocker.close()
    row = await db.fetchrow("SELECT status, attempts FROM client_notifications")
    assert row is not None and (row["status"], row["attempts"]) == ("queued", 1)
    async for _next in start_app(delivering):
        received = await receiver.wait_for_count(2)
        await all_sent(db)
    assert [r.body for r in received] == [{"auth_req_id": auth_req_id}] * 2
    assert await db.fetchval("SELECT attempts FROM client_notifications") == 2


async def settle_is_blocked(db: asyncpg.Connection) -> None:
    """Until a statement recording outcomes waits for a row lock."""
    async with asyncio.timeout(10):
        while True:
            if await db.fetchval(
                """SELECT count(*) FROM pg_stat_activity
                    WHERE wait_event_type = 'Lock' AND query LIKE '%UPDATE client_notifications%'"""
            ):
                return
            await asyncio.sleep(0.05)
