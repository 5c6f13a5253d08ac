"""Held token polls: wait, on this replica, for a request's state to change.

A waiter is registered *before* the poll statement runs, so a decision that
commits between the statement and the wait still wakes it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class DecisionWaiters:
    def __init__(self) -> None:
        self._waiting: dict[bytes, set[asyncio.Future[None]]] = {}
        self._released = False

    @property
    def released(self) -> bool:
        return self._released

    @property
    def held(self) -> int:
        return sum(len(s) for s in self._waiting.values())

    @contextlib.contextmanager
    def watch(self, id_hash: bytes) -> Iterator[asyncio.Future[None]]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._released:
            future.set_result(None)
        waiters = self._waiting.setdefault(id_hash, set())
        waiters.add(future)
        try:
            yield future
        finally:
            waiters.discard(future)
            if not waiters:
                self._waiting.pop(id_hash, None)

    def wake(self, id_hash: bytes) -> None:
        for future in self._waiting.get(id_hash, ()):
            if not future.done():
                future.set_result(None)

    def wake_hex(self, payload: str) -> None:
        try:
            self.wake(bytes.fromhex(payload))
        except ValueError:
            return

    def wake_all(self) -> None:
        for id_hash in list(self._waiting):
            self.wake(id_hash)

    def release_all(self) -> None:
        """Shutdown: answer every held poll now and hold no new ones."""
        self._released = True
        self.wake_all()

    @staticmethod
    async def wait(
        future: asyncio.Future[None],
        seconds: float,
        interrupt: asyncio.Future[None] | None = None,
    ) -> bool:
        """True if woken or ``interrupt`` resolved, False if ``seconds`` passed first."""
        if interrupt is None:
            try:
                await asyncio.wait_for(asyncio.shield(future), seconds)
            except TimeoutError:
                return False
            return True
        done, _ = await asyncio.wait(
            (future, interrupt), timeout=seconds, return_when=asyncio.FIRST_COMPLETED
        )
        return bool(done)
