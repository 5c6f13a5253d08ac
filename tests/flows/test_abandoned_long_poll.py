"""A long poll whose client gave up ends at once and does not spend the request for nobody."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest

from backchannel.settings import Settings
from tests.conftest import RegisteredClient
from tests.support.ciba import CIBA_GRANT, decide, rewind
from tests.support.served import serve_over_hypercorn
from tests.support.waiting import eventually

pytestmark = pytest.mark.usefixtures("alice")


async def test_tokens_approved_after_the_client_left_a_held_poll_go_to_its_next_poll(
    settings: Settings, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    async with serve_over_hypercorn(settings) as served:
        form = {"scope": "openid", "login_hint": "alice@example.com"}
        async with httpx.AsyncClient(base_url=served.url) as http:
            started = await http.post("/bc-authorize", data=form, headers=rp.basic_auth())
            auth_req_id = started.json()["auth_req_id"]
            token_form = {"grant_type": CIBA_GRANT, "auth_req_id": auth_req_id}

        # A client that holds a poll, then gives up (its HTTP timeout, a restart).
        leaving = httpx.AsyncClient(base_url=served.url)
        held = asyncio.create_task(
            leaving.post(
                "/token", data=token_form, headers={**rp.basic_auth(), "Prefer": "wait=25"}
            )
        )
        waiters = served.services.waiters
        await eventually(lambda: _true(waiters.held == 1))
        held.cancel()
        await asyncio.gather(held, return_exceptions=True)
        await leaving.aclose()
        # The server lets go of the abandoned poll as soon as its connection closes,
        # without waiting out the 25 seconds or a decision, and without a statement.
        await eventually(lambda: _true(waiters.held == 0))

        await decide(db, auth_req_id, "approved")
        await rewind(db, auth_req_id, 6)
        async with httpx.AsyncClient(base_url=served.url) as http:
            answer = await http.post("/token", data=token_form, headers=rp.basic_auth())
        assert answer.status_code == 200, answer.text
        assert await db.fetchval("SELECT count(*) FROM access_tokens") == 1


async def _true(condition: bool) -> bool:
    return condition
