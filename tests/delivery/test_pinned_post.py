"""Outbound calls to URLs from outside go only where the guard looked.

A name that resolves to a private address is refused right before connecting
(Web Push endpoints, client notification endpoints, the app's own outbound
session); a name that passed the check is connected to at the very address
checked, so a second answer from DNS cannot re-point it.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from backchannel.delivery.pinned_post import pinned_attempts, post_first_reachable
from backchannel.delivery.vapid import load_vapid, new_vapid_key
from backchannel.delivery.webpush import PushSubscription, send_web_push
from backchannel.settings import Settings
from backchannel.url_guard import PublicOnlyResolver, UnsafeURL
from tests.support.push_service import run_push_service
from tests.support.receiver import free_port


def private_name() -> str:
    """A host name this machine resolves to a loopback address (its own name, or the
    ip6-loopback alias Debian's /etc/hosts has)."""
    for name in (socket.gethostname(), "ip6-localhost", "ip6-loopback"):
        try:
            if socket.getaddrinfo(name, None):
                return name
        except OSError:
            continue
    raise AssertionError("no host name here resolves to a non-public address")


@dataclasses.dataclass
class Seen:
    hosts: list[str] = dataclasses.field(default_factory=list)


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, Seen]]:
    """A plain HTTP server on 127.0.0.1 that notes the Host header of what reaches it."""
    seen = Seen()

    async def handle(request: web.Request) -> web.Response:
        seen.hosts.append(request.headers.get("Host", ""))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port, seen
    finally:
        await runner.cleanup()


class MisleadingResolver(AbstractResolver):
    """DNS that has changed its mind: every name now points somewhere unreachable."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host, host="192.0.2.1", port=port, family=socket.AF_INET, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        return None


async def test_a_pinned_post_goes_to_the_checked_address_whatever_dns_says_later(
    server: tuple[int, Seen],
) -> None:
    port, seen = server
    name = private_name()
    url = f"http://{name}:{port}/cb"
    attempts = await pinned_attempts(url, allow_insecure=True)
    connector = aiohttp.TCPConnector(resolver=MisleadingResolver())
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        status, _ = await post_first_reachable(http, attempts, {}, b"{}")
    assert status == 204
    assert seen.hosts == [f"{name}:{port}"]  # the URL's name, at the checked address


async def test_a_name_resolving_to_a_private_address_is_refused_before_connecting() -> None:
    with pytest.raises(UnsafeURL, match="not public"):
        await pinned_attempts(f"https://{private_name()}/cb", allow_insecure=False)


async def test_the_apps_outbound_session_refuses_names_that_resolve_privately(
    server: tuple[int, Seen],
) -> None:
    port, seen = server
    url = f"http://{private_name()}:{port}/cb"
    guarded = aiohttp.TCPConnector(resolver=PublicOnlyResolver(allow_insecure=False))
    async with aiohttp.ClientSession(connector=guarded) as http:
        with pytest.raises(aiohttp.ClientConnectorError):
            await http.post(url)
    lenient = aiohttp.TCPConnector(resolver=PublicOnlyResolver(allow_insecure=True))
    async with aiohttp.ClientSession(connector=lenient) as http, http.post(url) as response:
        assert response.status == 204
    assert len(seen.hosts) == 1


async def test_a_push_to_an_allowed_host_that_resolves_privately_is_refused_at_send_time(
    settings_like: Settings,
) -> None:
    name = private_name()
    async with run_push_service() as service:
        sub = service.subscribe()
        port = int(sub.endpoint.rsplit(":", 1)[1].split("/", 1)[0])
        # Allowed by the operator's list, yet it resolves to this machine.
        endpoint = f"https://{name}:{port}/push/{sub.token}"
        settings = settings_like.replace(push_allowed_hosts=(name,), push_allow_loopback=False)
        result = await _push(settings, endpoint, sub)
        assert result.outcome == "failed"
        assert result.error is not None and "not public" in result.error
        assert service.attempts == []


async def _push(settings: Settings, endpoint: str, sub: Any) -> Any:
    async with aiohttp.ClientSession() as http:
        return await send_web_push(
            http,
            settings,
            PushSubscription(endpoint, sub.p256dh, sub.auth),
            {"type": "dismiss", "ref": "ab" * 32},
            vapid=load_vapid(new_vapid_key()[1]),
            topic="t" * 32,
            ttl=60,
        )


@pytest.fixture
def settings_like() -> Settings:
    return Settings(push_timeout=2.0)
