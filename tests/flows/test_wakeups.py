"""Queued messages leave at once: the statement that queues them wakes the workers.

The workers' own polling is set to a minute here, so that only the NOTIFY
wiring (statement → LISTEN → worker) can deliver within the test's bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from backchannel.db.users import User
from backchannel.delivery.vapid import ensure_vapid_key
from backchannel.settings import Settings
from tests.conftest import RegisteredClient, start_app
from tests.support.ciba import decide, start_request
from tests.support.push_service import LocalPushService, insert_device, run_push_service
from tests.support.receiver import run_receiver

WITHIN = 10.0  # far below the one-minute polling, far above a loaded machine's latency


@pytest.fixture
def slow_polling(settings: Settings) -> Settings:
    return settings.replace(
        delivery_poll_interval=60, allow_insecure_urls=True, push_allow_loopback=True
    )


@pytest.fixture
async def push_service() -> AsyncIterator[LocalPushService]:
    async with run_push_service() as service:
        yield service


async def test_a_new_requests_prompt_is_pushed_without_waiting_for_the_worker_to_poll(
    slow_polling: Settings,
    push_service: LocalPushService,
    rp: RegisteredClient,
    db: asyncpg.Connection,
    alice: User,
) -> None:
    vapid = await ensure_vapid_key(db)
    subscription = push_service.subscribe(server_key=vapid.public_key)
    await insert_device(db, alice.user_id, subscription, vapid_kid=vapid.kid)
    async for app in start_app(slow_polling):
        response = await start_request(app.http, rp.basic_auth())
        assert response.status_code == 200, response.text
        await push_service.wait_until(
            lambda: len(push_service.received_by(subscription)) == 1, within=WITHIN
        )


async def test_a_decision_is_pinged_without_waiting_for_the_worker_to_poll(
    slow_polling: Settings, make_client: object, db: asyncpg.Connection, alice: User
) -> None:
    async for receiver in run_receiver():
        pinger: RegisteredClient = await make_client(  # type: ignore[operator]
            backchannel_token_delivery_mode="ping",
            backchannel_client_notification_endpoint=receiver.url,
        )
        async for app in start_app(slow_polling):
            response = await start_request(
                app.http, pinger.basic_auth(), client_notification_token="t"
            )
            auth_req_id = response.json()["auth_req_id"]
            await decide(db, auth_req_id, "approved")
            await receiver.wait_for_count(1, within=WITHIN)


async def test_a_clients_pings_held_back_by_its_bound_go_on_as_soon_as_a_send_ends(
    slow_polling: Settings, make_client: object, db: asyncpg.Connection, alice: User
) -> None:
    settings = slow_polling.replace(
        notification_per_client=1, fatigue_max_pending=0, fatigue_max_prompts=0
    )
    async for receiver in run_receiver():
        pinger: RegisteredClient = await make_client(  # type: ignore[operator]
            backchannel_token_delivery_mode="ping",
            backchannel_client_notification_endpoint=receiver.url,
        )
        gate = asyncio.Event()
        receiver.answer(gate, 204)  # the first answer waits for the gate
        async for app in start_app(settings):
            ids = []
            for _ in range(3):
                response = await start_request(
                    app.http, pinger.basic_auth(), client_notification_token="t"
                )
                ids.append(response.json()["auth_req_id"])
            # One transaction, one wake-up: the worker leases the first ping only.
            async with db.transaction():
                for auth_req_id in ids:
                    await decide(db, auth_req_id, "approved")
            await receiver.wait_for_count(1, within=WITHIN)
            await queued(db, 2)
            gate.set()
            received = await receiver.wait_for_count(3, within=WITHIN)
            assert sorted(r.body["auth_req_id"] for r in received) == sorted(ids)


async def queued(db: asyncpg.Connection, count: int) -> None:
    """Until ``count`` notifications are queued and not leased."""
    async with asyncio.timeout(WITHIN):
        while True:
            if (
                await db.fetchval(
                    "SELECT count(*) FROM client_notifications"
                    " WHERE status = 'queued' AND leased_until IS NULL"
                )
                == count
            ):
                return
            await asyncio.sleep(0.05)
