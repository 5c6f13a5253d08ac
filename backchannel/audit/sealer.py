"""The background sealer: seals committed audit rows about once a second.

One runs in every app instance (started and stopped by the lifespan); the
advisory lock in :func:`seal_batch` lets one of them work at a time, so
replicas never seal the same row twice. Inserts never wait for it.
"""

from __future__ import annotations

import logging

from backchannel.audit.chain import SEAL_BATCH, SealResult, seal_pending
from backchannel.db.pool import ConnectionPool
from backchannel.periodic import Periodic

log = logging.getLogger(__name__)


class AuditSealer(Periodic):
    name = "audit-sealer"

    def __init__(
        self, pool: ConnectionPool, *, interval: float = 1.0, batch_size: int = SEAL_BATCH
    ) -> None:
        super().__init__(interval=interval)
        self._pool = pool
        self._batch_size = batch_size

    async def seal_once(self) -> SealResult:
        """Seal everything committed so far (unless another sealer is at it)."""
        async with self._pool.acquire() as conn:
            return await seal_pending(conn, batch_size=self._batch_size)

    async def run_round(self) -> None:
        result = await self.seal_once()
        if result.sealed:
            log.debug("sealed %d audit rows (head seq %s)", result.sealed, result.head_seq)
