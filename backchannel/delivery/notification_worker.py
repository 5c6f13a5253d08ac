"""The notification worker: sends queued ping and push notifications to clients.

One runs in every app instance (started and stopped by the lifespan). It wakes
on ``NOTIFY bc_notify`` (sent by every statement that queues a notification)
and at least every ``poll_interval`` seconds, sweeps up the notifications of
requests that ended without a change that queued them (expiry, denial for poll
abuse), and leases due notifications: at most ``notification_batch_size`` in
flight, at most ``notification_per_client`` of them for one client, so that a
slow or hanging endpoint holds up only its own client's notifications.

Ping (CIBA §10.2) sends ``{"auth_req_id"}`` whatever the outcome; the client
then calls the token endpoint. Push (§10.3) sends the token response on
approval, minted once by the ``mint`` hook (the protocol layer) in a
transaction that also stores it sealed on the row, so that every retry, even
after this worker dies mid-send, resends the same tokens; on denial or expiry
it sends the §12 error. Tokens whose push failed for good or was given up are
revoked: nobody received them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from backchannel.db.central_revocation import revoke_request_tokens
from backchannel.db.client_notifications import (
    NotificationJob,
    Settled,
    claim_notifications,
    mark_notification_failed,
    mark_notification_given_up,
    mark_notification_retry,
    mark_notification_sent,
    queue_ended_notifications,
    sealed_field,
)
from backchannel.db.pool import ConnectionPool
from backchannel.delivery.notifications import NotificationResult, post_notification
from backchannel.delivery.retry import retry_delay
from backchannel.errors import denial_description
from backchannel.key_wrapping import KeyWrapError, KeyWrapper
from backchannel.observability.metrics import Metrics
from backchannel.periodic import DB_ERRORS, Periodic
from backchannel.settings import Settings

log = logging.getLogger(__name__)

SWEEP_BATCH = 100

# The push token response for a job and its unsealed auth_req_id: minted once and
# stored sealed with the job; None when the job's lease was lost meanwhile.
PushMinter = Callable[[NotificationJob, str], Awaitable[dict[str, Any] | None]]

EXPIRED_DESCRIPTION = "the request expired before the user decided"


class Unsendable(Exception):
    """The notification cannot be composed (a sealed value is missing or unreadable)."""


class NotificationWorker(Periodic):
    name = "notification-worker"

    def __init__(
        self,
        pool: ConnectionPool,
        http: aiohttp.ClientSession,
        settings: Settings,
        *,
        mint: PushMinter,
        wrapper: KeyWrapper,
        metrics: Metrics | None = None,
        poll_interval: float = 1.0,
        sweep_interval: float = 2.0,
        lease_seconds: float | None = None,
    ) -> None:
        super().__init__(interval=poll_interval)
        self._pool = pool
        self._http = http
        self._settings = settings
        self._mint = mint
        self._wrapper = wrapper
        self._metrics = metrics if metrics is not None else Metrics(process=False)
        self._sweep_interval = sweep_interval
        # Longer than any send can take, with room to mint and record it.
        self.lease_seconds = (
            lease_seconds if lease_seconds is not None else 2 * settings.notification_timeout + 10
        )
        self._inflight: dict[asyncio.Task[None], str] = {}
        self._next_sweep = 0.0
        self._backlog = False

    async def stop(self, grace: float = 2.0) -> None:
        """Stop leasing; give sends in flight ``grace`` seconds, then cancel them
        (their leases run out and another attempt is made later)."""
        await super().stop(grace)
        if self._inflight:
            _done, pending = await asyncio.wait(set(self._inflight), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def run_round(self) -> None:
        loop = asyncio.get_running_loop()
        settings = self._settings
        if loop.time() >= self._next_sweep:
            queued = await queue_ended_notifications(self._pool, limit=SWEEP_BATCH)
            if queued < SWEEP_BATCH:
                self._next_sweep = loop.time() + self._sweep_interval
        free = settings.notification_batch_size - len(self._inflight)
        if free <= 0:
            return
        jobs = await claim_notifications(
            self._pool,
            limit=free,
            per_client=settings.notification_per_client,
            sending=dict(collections.Counter(self._inflight.values())),
            lease_seconds=self.lease_seconds,
        )
        self._backlog = len(jobs) == free
        for job in jobs:
            task = asyncio.create_task(self._deliver(job), name="notification-send")
            self._inflight[task] = job.client_id
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        # A freed slot may let a client with more notifications waiting go on.
        self.wake()

    async def _deliver(self, job: NotificationJob) -> None:
        try:
            try:
                bearer: str = self._unseal(job, "bearer", job.bearer_sealed)
                body = await self._body(job)
            except Unsendable as exc:
                await self._settle(job, NotificationResult("failed", error=str(exc)))
                return
            if body is None:
                log.info("notification %s: lease lost while minting; left for a retry", job.id)
                return
            result = await post_notification(
                self._http,
                job.endpoint or "",
                bearer,
                body,
                seconds=self._settings.notification_timeout,
                allow_insecure=self._settings.allow_insecure_urls,
            )
            await self._settle(job, result)
        except DB_ERRORS as exc:
            # Unrecorded: the lease runs out and the notification is attempted again.
            log.warning("notification %s: database unavailable: %s", job.id, exc)
        except Exception:
            log.exception("notification %s: unexpected failure", job.id)

    def _unseal(self, job: NotificationJob, field: str, sealed: str | None) -> Any:
        if sealed is None:
            raise Unsendable(f"no {field}")
        try:
            return self._wrapper.unwrap_json(sealed, sealed_field(job.id_hash, field))
        except (KeyWrapError, ValueError) as exc:
            raise Unsendable(f"cannot unseal its {field}: {exc}") from None

    async def _body(self, job: NotificationJob) -> dict[str, Any] | None:
        auth_req_id: str = self._unseal(job, "auth_req_id", job.auth_req_id_sealed)
        if job.mode == "ping":
            return {"auth_req_id": auth_req_id}
        if job.outcome != "approved":
            # The §12 error of a push whose request did not end approved.
            error, description = (
                ("access_denied", denial_description(job.denial_reason))
                if job.outcome == "denied"
                else ("expired_token", EXPIRED_DESCRIPTION)
            )
            return {"auth_req_id": auth_req_id, "error": error, "error_description": description}
        if job.response_sealed is not None:
            stored: dict[str, Any] = self._unseal(job, "response", job.response_sealed)
            return stored
        return await self._mint(job, auth_req_id)

    async def _settle(self, job: NotificationJob, result: NotificationResult) -> None:
        settled: Settled | None
        delay = retry_delay(job.attempts, result.retry_after)
        if result.outcome == "sent":
            assert result.status is not None
            settled = await mark_notification_sent(self._pool, job, result.status)
            self._metrics.record_notification(job.mode, "sent", job.due_at)
            log.debug("notification %s delivered (%s)", job.id, result.status)
        elif result.outcome == "retry" and not self._past_deadline(job, delay):
            settled = await mark_notification_retry(
                self._pool, job, delay=delay, status=result.status, error=result.error or "retry"
            )
            self._metrics.record_notification(job.mode, "retry")
            log.info("notification %s: %s; retry in %.1f s", job.id, result.error, delay)
        else:
            settled = await self._end_undelivered(job, result)
        if settled is None:
            log.warning("notification %s: lease lost before its outcome was recorded", job.id)

    def _past_deadline(self, job: NotificationJob, delay: float) -> bool:
        """Would the next attempt come after the notification's time has run out?"""
        give_up_at = job.due_at + timedelta(seconds=self._settings.notification_give_up_after)
        return datetime.now(UTC) + timedelta(seconds=delay) > give_up_at

    async def _end_undelivered(
        self, job: NotificationJob, result: NotificationResult
    ) -> Settled | None:
        """Failed for good, or given up: record it and revoke any tokens minted for it."""
        error = result.error or "failed"
        given_up = result.outcome == "retry"
        async with self._pool.acquire() as conn, conn.transaction():
            if given_up:
                settled = await mark_notification_given_up(
                    conn, job, status=result.status, error=error
                )
            else:
                settled = await mark_notification_failed(
                    conn, job, status=result.status, error=error
                )
            if settled is not None and job.mode == "push" and job.outcome == "approved":
                await revoke_request_tokens(conn, job.auth_request_id)
        outcome = "given_up" if given_up else "failed"
        self._metrics.record_notification(job.mode, outcome)
        log.warning("notification %s %s: %s", job.id, outcome.replace("_", " "), error)
        return settled
