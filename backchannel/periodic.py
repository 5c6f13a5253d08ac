"""A background task that runs one round of work every ``interval`` seconds.

Subclasses implement :meth:`Periodic.run_round`. A round that fails with a
database error is logged as a warning, any other exception with its
traceback; either way the task lives on to the next round. :meth:`wake`
starts the next round at once; :meth:`stop` lets a round in progress finish
(up to a grace period) before the task ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

log = logging.getLogger(__name__)

DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class Periodic:
    """The base of every background loop: the outbox worker, the audit sealer and the
    housekeeper."""

    name = "periodic"

    def __init__(self, *, interval: float) -> None:
        self._interval = interval
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def run_round(self) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self, grace: float = 5.0) -> None:
        """Let a round in progress finish (``grace`` seconds at most), then stop."""
        if self._task is None:
            return
        self._stopping.set()
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    def wake(self) -> None:
        """Run the next round now rather than at the next tick."""
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                await self.run_round()
            except DB_ERRORS as exc:
                log.warning("%s: database unavailable: %s", self.name, exc)
            except Exception:  # the task must outlive a bug in one round
                log.exception("%s: unexpected failure", self.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
