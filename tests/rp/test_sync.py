"""The blocking client, used from a plain thread that has no event loop."""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any

import asyncpg
import pytest

from backchannel.rp import AuthenticationStarted, SyncCibaClient, UsageError
from tests.conftest import RegisteredClient
from tests.rp.conftest import basic
from tests.support.ciba import decide, poll_is_held
from tests.support.served import ServedApp
from tests.support.waiting import eventually

pytestmark = pytest.mark.usefixtures("alice")


async def test_blocking_client_runs_the_whole_flow_from_a_plain_thread(
    server: ServedApp, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    started_queue: queue.Queue[AuthenticationStarted] = queue.Queue()
    outcome: dict[str, Any] = {}

    def relying_party() -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            outcome["loop_in_thread"] = False
        with SyncCibaClient(server.url, basic(rp)) as client:
            started = client.start(login_hint="alice@example.com", scope="openid email")
            started_queue.put(started)
            tokens = client.wait(started)  # blocks until the user approves
            outcome["tokens"] = tokens
            outcome["userinfo"] = client.userinfo(tokens.access_token)
        try:
            client.start(login_hint="alice@example.com")
        except UsageError as exc:
            outcome["after_close"] = exc

    thread = threading.Thread(target=relying_party)
    thread.start()
    started = await asyncio.to_thread(started_queue.get, timeout=20)
    await eventually(lambda: poll_is_held(db, server.services.waiters), within=20)
    await decide(db, started.auth_req_id, "approved")
    await asyncio.to_thread(thread.join, 20)

    assert not thread.is_alive()
    assert outcome["loop_in_thread"] is False
    assert outcome["tokens"].id_token_claims["sub"] == "alice"
    assert outcome["userinfo"] == {"sub": "alice", "email": "alice@example.com"}
    assert "closed" in str(outcome["after_close"])
