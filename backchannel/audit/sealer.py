"""The background sealer: seals committed audit rows about once a second.

One runs in every app instance (started and stopped by the lifespan); the
advisory lock in :func:`seal_batch` lets one of them work at a time, so
replicas never seal the same row twice. Inserts never wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from backchannel.audit.chain import SEAL_BATCH, SealResult, seal_pending
from backchannel.db.pool import ConnectionPool

log = logging.getLogger(__name__)

_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class AuditSealer:
    def __init__(
        self, pool: ConnectionPool, *, interval: float = 1.0, batch_size: int = SEAL_BATCH
    ) -> None:
        self._pool = pool
        self._interval = interval
        self._batch_size = batch_size
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name="audit-sealer")

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
        """Seal now rather than at the next tick."""
        self._wake.set()

    async def seal_once(self) -> SealResult:
        """Seal everything committed so far (unless another sealer is at it)."""
        async with self._pool.acquire() as conn:
            return await seal_pending(conn, batch_size=self._batch_size)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                result = await self.seal_once()
                if result.sealed:
                    log.debug("sealed %d audit rows (head seq %s)", result.sealed, result.head_seq)
            except _DB_ERRORS as exc:
                log.warning("audit sealer: database unavailable: %s", exc)
            except Exception:  # the sealer must outlive a bug in one round
                log.exception("audit sealer: unexpected failure")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
