"""The whole poll-mode flow against a real hypercorn server on a loopback port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from backchannel.settings import Settings
from tests.conftest import RegisteredClient
from tests.support.ciba import CIBA_GRANT, decide, poll_is_held
from tests.support.served import ServedApp, serve_over_hypercorn
from tests.support.waiting import eventually

pytestmark = pytest.mark.usefixtures("alice")


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[ServedApp]:
    async with serve_over_hypercorn(settings) as served:
        yield served


async def test_relying_party_gets_tokens_userinfo_refresh_and_revocation_over_http(
    server: ServedApp, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    server_url = server.url
    async with httpx.AsyncClient(base_url=server_url, headers=rp.basic_auth()) as http:
        discovery = (await http.get("/.well-known/openid-configuration")).json()
        assert discovery["issuer"] == server_url
        assert discovery["backchannel_authentication_endpoint"] == server_url + "/bc-authorize"

        started = await http.post(
            "/bc-authorize",
            data={
                "scope": "openid email profile",
                "login_hint": "alice@example.com",
                "binding_message": "Pay 80 EUR at Acme Coffee?",
            },
        )
        assert started.status_code == 200, started.text
        auth_req_id = started.json()["auth_req_id"]

        held = asyncio.create_task(
            http.post(
                "/token",
                data={"grant_type": CIBA_GRANT, "auth_req_id": auth_req_id},
                headers={"Prefer": "wait=25"},
                timeout=30,
            )
        )
        await eventually(lambda: poll_is_held(db, server.services.waiters))
        await decide(db, auth_req_id, "approved", device_id="phone-1")
        # Long before the 25 s wait runs out: the approval woke the held poll.
        tokens_response = await asyncio.wait_for(held, 12)
        assert tokens_response.status_code == 200, tokens_response.text
        tokens = tokens_response.json()

        userinfo = await http.get(
            "/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        )
        assert userinfo.status_code == 200, userinfo.text
        assert userinfo.json()["sub"] == "alice"
        assert userinfo.json()["email"] == "alice@example.com"

        refreshed = await http.post(
            "/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
        )
        assert refreshed.status_code == 200, refreshed.text
        new_refresh = refreshed.json()["refresh_token"]
        assert new_refresh != tokens["refresh_token"]

        revoked = await http.post("/revoke", data={"token": new_refresh})
        assert revoked.status_code == 200
        introspected = await http.post("/introspect", data={"token": new_refresh})
        assert introspected.json() == {"active": False}
