"""The call-centre panel (examples/call_centre) served for tests, and an agent driving it.

``running_panel`` serves the real panel under hypercorn on a loopback port,
as a client of a real backchannel server. ``Desk`` is an agent at the panel
over plain HTTP: it logs in, starts verifications and reads what the pages say.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx

from backchannel.rp import ClientAuth
from examples.call_centre.agents import Agent, AgentDirectory, hash_password
from examples.call_centre.config import PanelConfig
from examples.call_centre.serve import serve_panel
from tests.support.served import free_port

AGENT = "agent42"
AGENT_PASSWORD = "correct horse battery staple"
OTHER_AGENT = "agent7"
OTHER_PASSWORD = "another long passphrase"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_CURRENT_STATUS = re.compile(r'<section class="card current" id="current"[^>]*data-status="(\w+)"')


@functools.cache
def agents() -> AgentDirectory:
    """Two agents with argon2id hashes (made once: each hash takes a while, by design)."""
    return AgentDirectory(
        [
            Agent(AGENT, "Agent 42", hash_password(AGENT_PASSWORD)),
            Agent(OTHER_AGENT, "Agent 7", hash_password(OTHER_PASSWORD)),
        ]
    )


@contextlib.asynccontextmanager
async def running_panel(issuer: str, auth: ClientAuth, **changes: Any) -> AsyncIterator[str]:
    """The panel's URL while it serves, for ``issuer`` as the client ``auth`` names."""
    port = free_port()
    config = PanelConfig(issuer=issuer, auth=auth, agents=agents(), port=port, **changes)
    stop = asyncio.Event()
    task = asyncio.create_task(serve_panel(config, stop))
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as probe:
        for _ in range(200):
            if task.done():
                task.result()
                raise AssertionError("the panel stopped during startup")
            try:
                await probe.get(url + "/login")
                break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("the panel did not answer within 10 s")
    try:
        yield url
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def csrf_token(page: str) -> str:
    found = _CSRF.search(page)
    assert found is not None, "the page has no form with a CSRF token"
    return found[1]


def current_status(page: str) -> str | None:
    found = _CURRENT_STATUS.search(page)
    return found[1] if found else None


class Desk:
    """An agent at the panel, over HTTP, with the browser's cookie jar."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.token = ""

    async def log_in(self, login: str = AGENT, password: str = AGENT_PASSWORD) -> httpx.Response:
        form = await self.http.get("/login")
        self.token = csrf_token(form.text)
        answer = await self.http.post(
            "/login", data={"csrf_token": self.token, "login": login, "password": password}
        )
        if answer.status_code == 303:
            self.token = csrf_token((await self.http.get("/")).text)
        return answer

    async def post(self, path: str, **fields: str) -> httpx.Response:
        return await self.http.post(path, data={"csrf_token": self.token, **fields})

    async def start(self, caller: str, reason: str = "password-reset") -> str:
        """Start a verification; the path of its page."""
        answer = await self.post("/attempts", caller=caller, reason=reason)
        assert answer.status_code == 303, answer.text
        location: str = answer.headers["location"]
        return location

    async def status(self, attempt: str) -> str | None:
        return current_status((await self.http.get(attempt)).text)

    async def until_status(self, attempt: str, *wanted: str, within: float = 15.0) -> str:
        """The attempt's page once its status is one of ``wanted``."""
        async with asyncio.timeout(within):
            while True:
                page = (await self.http.get(attempt)).text
                if current_status(page) in wanted:
                    return page
                await asyncio.sleep(0.05)


async def request_hash(db: asyncpg.Connection, binding_message: str) -> bytes:
    """The id hash of the request the panel sent with ``binding_message``."""
    async with asyncio.timeout(10):
        while True:
            found = await db.fetchval(
                "SELECT id_hash FROM auth_requests WHERE binding_message = $1", binding_message
            )
            if found is not None:
                return bytes(found)
            await asyncio.sleep(0.05)


_MESSAGE = re.compile(r"<q>([^<]+)</q>")


def binding_message_on(page: str) -> str:
    """The binding message the attempt's page says the caller's phone shows."""
    found = _MESSAGE.search(page)
    assert found is not None
    return found[1]
