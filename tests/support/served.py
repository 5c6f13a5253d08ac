"""The real server on a real hypercorn socket: a free loopback port, the app's own lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette

from backchannel.app import create_app
from backchannel.oauth.services import Services
from backchannel.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class ServedApp:
    url: str  # also the issuer
    app: Starlette

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services


@contextlib.asynccontextmanager
async def serve_over_hypercorn(settings: Settings) -> AsyncIterator[ServedApp]:
    """Serve ``create_app(settings)`` with the issuer set to the URL it is served at."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app = create_app(settings.replace(issuer=url, port=port))
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    await _until_serving(url, task)
    try:
        yield ServedApp(url, app)
    finally:
        app.state.services.waiters.release_all()
        stop.set()
        await asyncio.wait_for(task, 10)


STARTUP_SECONDS = 60  # the lifespan (pool, migrations check, keys) on a loaded machine


async def _until_serving(url: str, server: asyncio.Task[None]) -> None:
    """Return once the server answers; raise if it stopped or did not answer in time."""
    deadline = asyncio.get_running_loop().time() + STARTUP_SECONDS
    async with httpx.AsyncClient() as probe:
        while True:
            if server.done():
                server.result()  # its startup error
                raise RuntimeError(f"the server at {url} stopped before serving")
            try:
                await probe.get(url + "/.well-known/openid-configuration")
                return
            except httpx.TransportError:
                if asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError(
                        f"the server at {url} did not answer within {STARTUP_SECONDS} s"
                    ) from None
                await asyncio.sleep(0.05)
