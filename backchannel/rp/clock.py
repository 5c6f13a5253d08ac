"""The time source of the client: wall clock for token claims, monotonic clock and sleep for
pacing and caches. Injectable, so that tests can let a poll loop's minutes pass at once."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the epoch (checks ``exp``/``iat``, stamps assertions)."""
        ...

    def monotonic(self) -> float:
        """A clock that never goes back (cache lifetimes, poll deadlines)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass on :meth:`monotonic`."""
        ...


class SystemClock:
    """The real clocks and :func:`asyncio.sleep`."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
