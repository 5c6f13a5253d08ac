"""The notification worker: sends queued ping and push notifications to clients.

One runs in every app instance (started and stopped by the lifespan). It wakes
on ``NOTIFY bc_notify`` (sent by every statement that queues a notification)
and at least every ``poll_interval`` seconds, sweeps up the notifications of
requests that ended without a change that queued them (expiry, denial for poll
abuse), and leases due notifications: at most ``notification_batch_size`` in
flight, at most ``notification_per_client`` of them for one client, so that a
slow or hanging endpoint holds up only its own client's notifications. A send
frees its slot as soon as the endpoint has answered; the outcomes are recorded
by one settling task, all those that came in meanwhile in one statement. Until
then the row stays leased, so no worker sends it again unless this one dies
before the outcome is recorded (the lease runs out: at least once).

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
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from backchannel.db.central_revocation import revoke_request_tokens
from backchannel.db.client_notifications import (
    Ending,
    NotificationJob,
    Settlement,
    claim_notifications,
    queue_ended_notifications,
    sealed_field,
    settle_notifications,
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
# Outcomes recorded in one statement at most.
SETTLE_BATCH = 200

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
        self._bounded: set[str] = set()  # clients the last lease found at their bound
        self._outcomes: list[Settlement] = []
        self._outcome_ready = asyncio.Event()
        self._settler: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        await super().start()
        if self._settler is None:
            self._closing = False
            self._settler = asyncio.create_task(self._settle_loop(), name="notification-settle")

    async def stop(self, grace: float = 2.0) -> None:
        """Stop leasing; give sends in flight ``grace`` seconds, then cancel them
        (their leases run out and another attempt is made later); then record the
        outcomes still waiting (``grace`` seconds more at most)."""
        await super().stop(grace)
        if self._inflight:
            _done, pending = await asyncio.wait(set(self._inflight), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        settler, self._settler = self._settler, None
        if settler is not None:
            self._closing = True
            self._outcome_ready.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(settler), grace)
            settler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await settler

    async def run_round(self) -> None:
        free = self._settings.notification_batch_size - len(self._inflight)
        if free > 0:
            await self._lease(free)
        # After leasing, so that the sweep never delays a notification already queued;
        # what it queues wakes the next round.
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_sweep:
            queued = await queue_ended_notifications(self._pool, limit=SWEEP_BATCH)
            if queued < SWEEP_BATCH:
                self._next_sweep = loop.time() + self._sweep_interval

    async def _lease(self, free: int) -> None:
        per_client = self._settings.notification_per_client
        sending = collections.Counter(self._inflight.values())
        jobs = await claim_notifications(
            self._pool,
            limit=free,
            per_client=per_client,
            sending=dict(sending),
            lease_seconds=self.lease_seconds,
        )
        # What this lease may have left behind: anything, if it filled every free
        # slot; a client's notifications, if it reached that client's bound.
        self._backlog = len(jobs) == free
        sending.update(job.client_id for job in jobs)
        self._bounded = {client for client, n in sending.items() if n >= per_client}
        for job in jobs:
            task = asyncio.create_task(self._deliver(job), name="notification-send")
            self._inflight[task] = job.client_id
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        client_id = self._inflight.pop(task, None)
        # A freed slot lets notifications the last lease left behind go on. If it can
        # have left none, the worker waits for the next wake-up instead, and no round
        # is spent leasing nothing.
        if self._backlog or client_id in self._bounded:
            self.wake()

    async def _deliver(self, job: NotificationJob) -> None:
        try:
            try:
                bearer: str = self._unseal(job, "bearer", job.bearer_sealed)
                body = await self._body(job)
            except Unsendable as exc:
                self._outcome(job, NotificationResult("failed", error=str(exc)))
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
            self._outcome(job, result)
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

    def _outcome(self, job: NotificationJob, result: NotificationResult) -> None:
        """What the attempt's result means; recorded by the settling task."""
        delay = retry_delay(job.attempts, result.retry_after)
        error = result.error
        if result.outcome == "sent":
            settlement = Settlement(job, "sent", result.status)
            self._metrics.record_notification(job.mode, "sent", job.due_at)
            log.debug("notification %s delivered (%s)", job.id, result.status)
        elif result.outcome == "retry" and not self._past_deadline(job, delay):
            settlement = Settlement(job, "retry", result.status, error or "retry", delay)
            self._metrics.record_notification(job.mode, "retry")
            log.info("notification %s: %s; retry in %.1f s", job.id, error, delay)
        else:
            ending: Ending = "given_up" if result.outcome == "retry" else "failed"
            settlement = Settlement(job, ending, result.status, error or "failed")
            self._metrics.record_notification(job.mode, ending)
            log.warning("notification %s %s: %s", job.id, ending.replace("_", " "), error)
        self._outcomes.append(settlement)
        self._outcome_ready.set()

    def _past_deadline(self, job: NotificationJob, delay: float) -> bool:
        """Would the next attempt come after the notification's time has run out?"""
        give_up_at = job.due_at + timedelta(seconds=self._settings.notification_give_up_after)
        return datetime.now(UTC) + timedelta(seconds=delay) > give_up_at

    async def _settle_loop(self) -> None:
        """Record outcomes as they come in: those that arrive while a batch is written
        go in the next one. Once the worker is stopping, ends when none is left."""
        while True:
            if not (self._closing and self._outcomes):
                if self._closing:
                    return
                await self._outcome_ready.wait()
                self._outcome_ready.clear()
            try:
                await self._settle_waiting()
            except DB_ERRORS as exc:
                # Unrecorded: their leases run out and they are attempted again.
                log.warning("notification outcomes: database unavailable: %s", exc)
            except Exception:
                log.exception("notification outcomes: unexpected failure")

    async def _settle_waiting(self) -> None:
        while self._outcomes:
            batch = self._outcomes[:SETTLE_BATCH]
            del self._outcomes[:SETTLE_BATCH]
            await self._settle(batch)

    async def _settle(self, batch: list[Settlement]) -> None:
        """One statement for the batch; with it, in the same transaction, revoke the
        tokens minted for a push that ended undelivered: nobody received them."""
        unreceived = [
            s
            for s in batch
            if s.ending in ("failed", "given_up")
            and s.job.mode == "push"
            and s.job.outcome == "approved"
        ]
        async with self._pool.acquire() as conn:
            if unreceived:
                async with conn.transaction():
                    settled = await settle_notifications(conn, batch)
                    for s in unreceived:
                        if s.job.id in settled:
                            await revoke_request_tokens(conn, s.job.auth_request_id)
            else:
                settled = await settle_notifications(conn, batch)
        for s in batch:
            if s.job.id not in settled:
                log.warning("notification %s: lease lost before its outcome was recorded", s.job.id)
