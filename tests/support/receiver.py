"""A relying party's notification endpoint for tests: a real aiohttp server on loopback.

It records every POST it gets (headers and JSON body) and answers from a
script: a list of answers used in turn, the last one repeated. An answer is
an HTTP status, ``"hang"`` (never answer), ``("redirect", url)``, or an
``asyncio.Event`` (204 once it is set).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

# The client_notification_token the tests' ping and push clients send.
BEARER = "rp-chosen.notification-token_1"

Answer = int | str | tuple[str, str] | asyncio.Event


@dataclass
class Received:
    path: str
    authorization: str | None
    content_type: str | None
    body: Any


@dataclass
class NotificationReceiver:
    url: str = ""
    script: list[Answer] = field(default_factory=lambda: [204])
    received: list[Received] = field(default_factory=list)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def answer(self, *script: Answer) -> None:
        self.script = list(script)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        async with self._arrived:
            self.received.append(
                Received(
                    request.path,
                    request.headers.get("Authorization"),
                    request.headers.get("Content-Type"),
                    body,
                )
            )
            answer = self.script[min(len(self.received) - 1, len(self.script) - 1)]
            self._arrived.notify_all()
        if answer == "hang":
            await asyncio.sleep(3600)
        if isinstance(answer, asyncio.Event):
            await answer.wait()
            answer = 204
        if isinstance(answer, tuple):
            raise web.HTTPFound(answer[1])
        assert isinstance(answer, int)
        return web.Response(status=answer)

    async def wait_for(
        self, condition: Callable[[list[Received]], bool], within: float = 10.0
    ) -> list[Received]:
        """Wait until ``condition(received)`` holds; the received notifications."""
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(lambda: condition(self.received))
        return list(self.received)

    async def wait_for_count(self, count: int, within: float = 10.0) -> list[Received]:
        return await self.wait_for(lambda received: len(received) >= count, within)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def run_receiver() -> AsyncIterator[NotificationReceiver]:
    receiver = NotificationReceiver()
    app = web.Application()
    app.router.add_post("/{path:.*}", receiver.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    receiver.url = f"http://127.0.0.1:{port}/cb"
    try:
        yield receiver
    finally:
        await runner.cleanup()
