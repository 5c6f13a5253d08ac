"""The whole poll-mode flow against a real hypercorn server on a loopback port."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config

from backchannel.app import create_app
from backchannel.settings import Settings
from tests.conftest import RegisteredClient
from tests.support.ciba import CIBA_GRANT, decide

pytestmark = pytest.mark.usefixtures("alice")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def server_url(settings: Settings) -> AsyncIterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app = create_app(settings.replace(issuer=url, port=port))
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    async with httpx.AsyncClient() as probe:
        for _ in range(100):
            try:
                await probe.get(url + "/.well-known/openid-configuration")
                break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    yield url
    app.state.services.waiters.release_all()
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_relying_party_gets_tokens_userinfo_refresh_and_revocation_over_http(
    server_url: str, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
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
                headers={"Prefer": "wait=20"},
                timeout=30,
            )
        )
        await asyncio.sleep(0.3)
        decided_at = time.monotonic()
        await decide(db, auth_req_id, "approved", device_id="phone-1")
        tokens_response = await asyncio.wait_for(held, 10)
        assert time.monotonic() - decided_at < 1.0
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
