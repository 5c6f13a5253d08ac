"""Watching and pacing the ``backchannel.rp`` client in tests.

``RequestLog`` records every request the client's aiohttp session sends (its
trace hooks, so the client is not altered). ``ServerTime`` is a clock for the
client whose sleeps pass at once: the client's monotonic clock jumps ahead and
every stored request's timestamps move back by as much, so that the server,
judging polls with the database clock, agrees that the time went by.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import aiohttp
import asyncpg


@dataclass(frozen=True)
class SentRequest:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class RequestLog:
    sent: list[SentRequest] = field(default_factory=list)

    def to(self, path: str) -> list[SentRequest]:
        return [r for r in self.sent if r.path == path]

    def trace_config(self) -> aiohttp.TraceConfig:
        config = aiohttp.TraceConfig()

        async def on_start(
            session: aiohttp.ClientSession,
            context: SimpleNamespace,
            params: aiohttp.TraceRequestStartParams,
        ) -> None:
            self.sent.append(SentRequest(params.method, params.url.path, dict(params.headers)))

        config.on_request_start.append(on_start)
        return config


async def rewind_all_requests(conn: asyncpg.Connection, seconds: float) -> None:
    """Move every auth request's timestamps into the past, as if ``seconds`` had gone by."""
    await conn.execute(
        """UPDATE auth_requests SET
               created_at = created_at - make_interval(secs => $1),
               expires_at = expires_at - make_interval(secs => $1),
               last_polled_at = last_polled_at - make_interval(secs => $1),
               locked_until = locked_until - make_interval(secs => $1)""",
        seconds,
    )


@dataclass
class FakeClock:
    """A clock for the client whose monotonic time moves only when told (sleeps included)."""

    offset: float = 0.0
    sleeps: list[float] = field(default_factory=list)

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.offset += seconds

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class ServerTime(FakeClock):
    """A clock whose sleeps pass at once, for the client and the server alike.

    ``during_sleep(n)`` runs during the n-th sleep (1-based), after the time moved:
    the moment to have the user decide.
    """

    db: asyncpg.Connection | None = None
    during_sleep: Callable[[int], Awaitable[None]] | None = None

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds)
        assert self.db is not None
        await rewind_all_requests(self.db, seconds)
        if self.during_sleep is not None:
            await self.during_sleep(len(self.sleeps))
