"""The outbox worker: sends queued Web Push messages and withdraws stale prompts.

One worker runs in every app instance (started and stopped by the lifespan).
It wakes on ``NOTIFY bc_outbox`` (written by every statement that queues a
message) and at least every ``poll_interval`` seconds, leases due messages
and sends them concurrently, at most ``settings.outbox_batch_size`` at a time.

Guarantees, with any number of replicas on one database:
- a message is leased by one worker at a time (``FOR UPDATE SKIP LOCKED``
  plus ``leased_until``), and a lease outlasts the send timeout, so replicas
  do not send the same message twice;
- a message whose worker stopped or died mid-send keeps its lease until it
  expires, then another worker (or this one after a restart) sends it.

Every ``sweep_interval`` seconds the worker also withdraws the prompts of
requests that ended without a recorded decision (expired, denied for poll
abuse, revoked): dismisses are queued for the devices that were prompted.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

import aiohttp

from backchannel.db.pool import ConnectionPool
from backchannel.db.push_outbox import (
    OutboxMessage,
    claim_due_messages,
    mark_failed,
    mark_retry,
    mark_sent,
    mark_subscription_gone,
    sweep_withdrawals,
)
from backchannel.delivery.retry import retry_delay
from backchannel.delivery.vapid import VapidSigners
from backchannel.delivery.webpush import (
    PushResult,
    PushSubscription,
    VapidTokens,
    send_web_push,
)
from backchannel.key_wrapping import KeyWrapper
from backchannel.observability.metrics import Metrics
from backchannel.periodic import DB_ERRORS, Periodic
from backchannel.settings import Settings

log = logging.getLogger(__name__)

SWEEP_BATCH = 100


class OutboxWorker(Periodic):
    name = "outbox-worker"

    def __init__(
        self,
        pool: ConnectionPool,
        http: aiohttp.ClientSession,
        settings: Settings,
        *,
        lease_seconds: float | None = None,
        poll_interval: float = 1.0,
        sweep_interval: float = 2.0,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(interval=poll_interval)
        self._pool = pool
        self._http = http
        self._settings = settings
        # Longer than any send can take (it is cut off at push_timeout), with room to record it.
        self.lease_seconds = (
            lease_seconds if lease_seconds is not None else 2 * settings.push_timeout + 10
        )
        self._sweep_interval = sweep_interval
        self._capacity = settings.outbox_batch_size
        self._signers = VapidSigners(KeyWrapper.from_settings(settings))
        # One VAPID token per key and push service, reused until shortly before it expires.
        self._vapid_tokens = VapidTokens()
        self._metrics = metrics if metrics is not None else Metrics(process=False)
        self._inflight: set[asyncio.Task[None]] = set()
        self._next_sweep = 0.0
        # The last claim filled every free slot: more messages are probably due.
        self._backlog = False

    async def stop(self, grace: float = 2.0) -> None:
        """Stop claiming; give sends in flight ``grace`` seconds, then cancel them
        (their leases expire and the messages are sent again later)."""
        await super().stop(grace)
        if self._inflight:
            _done, pending = await asyncio.wait(set(self._inflight), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def run_round(self) -> None:
        """Withdraw stale prompts when the sweep is due, then lease what fits in the free
        send slots. The next round starts on NOTIFY, when a send frees a slot while a
        backlog waits, or at the poll interval."""
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_sweep:
            swept = await sweep_withdrawals(self._pool, limit=SWEEP_BATCH)
            if swept.requests < SWEEP_BATCH:
                self._next_sweep = loop.time() + self._sweep_interval
        free = self._capacity - len(self._inflight)
        if free > 0:
            messages = await claim_due_messages(
                self._pool, limit=free, lease_seconds=self.lease_seconds
            )
            self._backlog = len(messages) == free
            for message in messages:
                task = asyncio.create_task(self._deliver(message), name="outbox-send")
                self._inflight.add(task)
                task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if self._backlog:
            self.wake()

    async def _deliver(self, message: OutboxMessage) -> None:
        try:
            result = await self._attempt(message)
            await self._settle(message, result)
        except DB_ERRORS as exc:
            # Unrecorded: the lease runs out and the message is attempted again.
            log.warning("outbox message %s: cannot record the outcome: %s", message.id, exc)
        except Exception:
            log.exception("outbox message %s: unexpected failure", message.id)

    async def _attempt(self, message: OutboxMessage) -> PushResult:
        if not (message.endpoint and message.p256dh and message.auth):
            return PushResult("failed", error="no_subscription")
        if message.vapid_kid is None or message.vapid_status not in ("active", "previous"):
            return PushResult("failed", error="no_vapid_key")
        vapid = await self._signers.get(self._pool, message.vapid_kid)
        if vapid is None:
            return PushResult("failed", error="no_vapid_key")
        return await send_web_push(
            self._http,
            self._settings,
            PushSubscription(message.endpoint, message.p256dh, message.auth),
            message.payload,
            vapid=vapid,
            topic=message.topic,
            ttl=message.ttl,
            tokens=self._vapid_tokens,
        )

    async def _settle(self, message: OutboxMessage, result: PushResult) -> None:
        host = _host(message.endpoint)
        if result.outcome == "sent":
            assert result.status is not None
            self._metrics.record_push_delivered(message.kind, message.created_at)
            recorded = await mark_sent(self._pool, message, result.status)
            log.debug("%s %s sent to %s (%s)", message.kind, message.id, host, result.status)
        elif result.outcome == "gone":
            assert result.status is not None
            await mark_subscription_gone(self._pool, message, result.status)
            recorded = True
            self._metrics.record_push_failure(message.kind, "gone")
            log.info("push subscription of device %s is gone (%s)", message.device_id, host)
        elif result.outcome == "retry":
            delay = retry_delay(message.attempts, result.retry_after)
            status = await mark_retry(
                self._pool,
                message,
                delay=delay,
                error=result.error or "retry",
                status=result.status,
                max_attempts=self._settings.push_max_attempts,
            )
            recorded = status is not None
            self._metrics.record_push_failure(message.kind, "transient")
            log.info(
                "%s %s to %s: %s; %s",
                message.kind,
                message.id,
                host,
                result.error,
                f"retry in {delay:.1f} s" if status == "queued" else f"now {status}",
            )
        else:
            reason = _failure_reason(result)
            self._metrics.record_push_failure(message.kind, reason)
            recorded = await mark_failed(
                self._pool, message, reason, error=result.error, status=result.status
            )
            log.warning("%s %s to %s failed: %s", message.kind, message.id, host, result.error)
        if not recorded:
            log.warning("outbox message %s: lease lost before its outcome was recorded", message.id)


def _failure_reason(result: PushResult) -> str:
    """A short code for the audit trail."""
    error = result.error or ""
    if error in ("no_subscription", "no_vapid_key"):
        return error
    if error.startswith("endpoint refused"):
        return "endpoint_refused"
    if result.status is not None:
        return "rejected"
    return "unsendable"


def _host(endpoint: str | None) -> str:
    """The push service's host: enough for logs (the endpoint URL is a capability)."""
    try:
        return urlsplit(endpoint or "").hostname or "-"
    except ValueError:
        return "-"
