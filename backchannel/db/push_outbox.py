"""The ``push_outbox`` table: Web Push messages waiting to be sent, and their fate.

A message is written by the transaction whose change it announces (a new
request's prompts, a decision's dismisses) and sent later by the outbox
worker. Sending is at-least-once: a worker leases a batch (``FOR UPDATE SKIP
LOCKED`` plus ``leased_until``), so replicas never take the same message while
a lease runs, and a message whose worker died is taken again once the lease
has passed. Every outcome is one conditional statement guarded by the lease
(``status = 'queued' AND attempts = <the attempt leased>``) that also writes
its audit row.

Statuses: ``queued``; ``sent``; ``failed`` (refused endpoint, dead
subscription, permanent error, attempts exhausted); ``dropped`` (worthless
now: its ``deliver_before`` passed, its prompt was withdrawn first, or its
device has no push subscription, having enrolled without one or lost it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from backchannel.db.pool import Queryable

# LISTEN channel woken whenever messages are queued; the payload is empty.
OUTBOX_CHANNEL = "bc_outbox"
# A dismiss stays worth sending this long after its request's expiry.
DISMISS_GRACE_SECONDS = 300


@dataclass(frozen=True)
class OutboxMessage:
    """A leased message with what sending it needs."""

    id: int
    kind: str  # prompt | dismiss
    topic: str
    payload: dict[str, Any]
    attempts: int  # including the attempt this lease is for
    ttl: int  # whole seconds until deliver_before
    device_id: str
    user_id: int
    auth_request_id: int | None
    client_id: str | None
    endpoint: str | None
    p256dh: str | None
    auth: str | None
    vapid_kid: str | None  # the device's key, else the active one
    vapid_status: str | None
    created_at: datetime | None = None  # when it was queued


async def enqueue_message(
    conn: Queryable,
    *,
    device_id: str,
    auth_request_id: int | None,
    kind: str,
    topic: str,
    payload: dict[str, Any],
    deliver_before: datetime,
    withdrawal: dict[str, Any] | None = None,
) -> int:
    """Queue one message and wake the workers (at commit); its id. A ``prompt``
    needs its ``withdrawal`` (the dismiss that withdraws it)."""
    message_id: int = await conn.fetchval(
        """WITH ins AS (
               INSERT INTO push_outbox (device_id, auth_request_id, kind, topic, payload,
                                        deliver_before, withdrawal)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
            RETURNING id
           ), notified AS (SELECT pg_notify($8, ''))
           SELECT id FROM ins, notified""",
        device_id,
        auth_request_id,
        kind,
        topic,
        payload,
        deliver_before,
        withdrawal,
        OUTBOX_CHANNEL,
    )
    return message_id


# The lease and the record of a send commit without waiting for the WAL flush
# (``set_config(..., true)`` is ``SET LOCAL synchronous_commit = off`` for the
# statement's transaction): what a crash of PostgreSQL can lose is only their last
# fraction of a second, which sending tolerates already. A lost lease leaves the
# message queued and unleased, so it is sent (again); a lost settle leaves it leased
# and queued, so it is sent again once the lease ends, as when a worker dies mid-send.
# Neither is lost once any later durable commit (a decision, a redemption, the audit
# sealer's) is flushed, the WAL being written in order; so a sealed audit chain never
# names a lost row. Visibility to other sessions is immediate either way, so replicas
# still never lease one message together. The one cost: a prompt whose lost lease
# was sent looks never attempted, so a decision that withdraws it before the worker
# sends it again after the restart queues no dismiss for it (that phone's prompt
# stays until it expires; deciding on it is refused). The other outcomes (failures,
# retries, dead subscriptions) stay durable: they are rare and some change devices.
_NOT_DURABLE = "set_config('synchronous_commit', 'off', true)"

_CLAIM = f"""
WITH due AS (
    SELECT o.id FROM push_outbox o
     WHERE o.status = 'queued' AND o.next_attempt_at <= now()
       AND (o.leased_until IS NULL OR o.leased_until <= now())
     ORDER BY o.next_attempt_at, o.id
     LIMIT $1
       FOR UPDATE SKIP LOCKED
), judged AS (
    SELECT o.id,
           CASE WHEN o.deliver_before < now() + interval '1 second' THEN 'expired'
                WHEN o.kind = 'prompt' AND r.prompts_withdrawn_at IS NOT NULL THEN 'withdrawn'
                WHEN o.kind = 'prompt' AND d.removed_at IS NOT NULL THEN 'device_removed'
                WHEN d.push_endpoint IS NULL THEN 'no_subscription'
           END AS drop_reason
      FROM due
      JOIN push_outbox o ON o.id = due.id
      JOIN devices d ON d.device_id = o.device_id
      LEFT JOIN auth_requests r ON r.id = o.auth_request_id
), dropped AS (
    UPDATE push_outbox o
       SET status = 'dropped', leased_until = NULL, last_error = j.drop_reason
      FROM judged j
     WHERE o.id = j.id AND j.drop_reason IS NOT NULL
 RETURNING o.id, o.device_id, o.auth_request_id, o.kind, o.attempts, o.last_error
), dropped_audit AS (
    INSERT INTO audit_events (event, client_id, user_id, auth_request_id, device_id, detail)
    SELECT 'delivery_failed', r.client_id, d.user_id, x.auth_request_id, x.device_id,
           jsonb_build_object('message_id', x.id, 'kind', x.kind, 'attempts', x.attempts,
                              'reason', x.last_error)
      FROM dropped x
      JOIN devices d ON d.device_id = x.device_id
      LEFT JOIN auth_requests r ON r.id = x.auth_request_id
     WHERE x.last_error = 'expired'
), leased AS (
    UPDATE push_outbox o
       SET leased_until = now() + make_interval(secs => $2), attempts = o.attempts + 1
      FROM judged j
     WHERE o.id = j.id AND j.drop_reason IS NULL
 RETURNING o.*
)
SELECT l.id, l.kind, l.topic, l.payload, l.attempts,
       floor(extract(epoch FROM l.deliver_before - now()))::int AS ttl,
       l.device_id, d.user_id, l.auth_request_id, r.client_id,
       d.push_endpoint AS endpoint, d.push_p256dh AS p256dh, d.push_auth AS auth,
       k.kid AS vapid_kid, k.status AS vapid_status, l.created_at,
       {_NOT_DURABLE} AS _commit
  FROM leased l
  JOIN devices d ON d.device_id = l.device_id
  LEFT JOIN auth_requests r ON r.id = l.auth_request_id
  LEFT JOIN vapid_keys k
         ON k.kid = coalesce(d.vapid_kid, (SELECT kid FROM vapid_keys WHERE status = 'active'))
 ORDER BY l.next_attempt_at, l.id
"""


async def claim_due_messages(
    conn: Queryable, *, limit: int, lease_seconds: float
) -> list[OutboxMessage]:
    """Lease up to ``limit`` due messages for ``lease_seconds``.

    Due messages that became worthless are settled on the way: past their
    ``deliver_before`` (dropped, audited ``delivery_failed``), prompts of
    withdrawn requests or to removed devices, and messages to devices without a
    push subscription (dropped: such a phone fetches its requests itself).

    A lease's commit does not wait for the WAL flush (see _NOT_DURABLE).
    """
    rows = await conn.fetch(_CLAIM, limit, float(lease_seconds))
    messages = []
    for row in rows:
        values = dict(row)
        del values["_commit"]
        messages.append(OutboxMessage(**values))
    return messages


_AUDIT_COLUMNS = "event, client_id, user_id, auth_request_id, device_id, detail"


async def mark_sent(conn: Queryable, message: OutboxMessage, status: int) -> bool:
    """Record a delivery (``prompt_sent`` / ``dismiss_sent``); False if the lease was lost.

    Its commit does not wait for the WAL flush (see _NOT_DURABLE)."""
    done = await conn.fetchval(
        f"""WITH done AS (
                UPDATE push_outbox
                   SET status = 'sent', sent_at = now(), leased_until = NULL, last_error = NULL
                 WHERE id = $1 AND status = 'queued' AND attempts = $2
             RETURNING id
            ), audit AS (
                INSERT INTO audit_events ({_AUDIT_COLUMNS})
                SELECT $3, $4, $5, $6, $7, $8 FROM done
            )
            SELECT count(*), max({_NOT_DURABLE}) AS _commit FROM done""",
        message.id,
        message.attempts,
        f"{message.kind}_sent",
        message.client_id,
        message.user_id,
        message.auth_request_id,
        message.device_id,
        {"message_id": message.id, "attempts": message.attempts, "status": status},
    )
    return bool(done)


async def mark_failed(
    conn: Queryable,
    message: OutboxMessage,
    reason: str,
    *,
    error: str | None = None,
    status: int | None = None,
) -> bool:
    """Give up on a message for good (audited ``delivery_failed`` with ``reason``, a
    short code, and ``error``, the details); False if the lease was lost."""
    done = await conn.fetchval(
        f"""WITH done AS (
                UPDATE push_outbox SET status = 'failed', leased_until = NULL, last_error = $3
                 WHERE id = $1 AND status = 'queued' AND attempts = $2
             RETURNING id
            ), audit AS (
                INSERT INTO audit_events ({_AUDIT_COLUMNS})
                SELECT 'delivery_failed', $4, $5, $6, $7, $8 FROM done
            )
            SELECT count(*) FROM done""",
        message.id,
        message.attempts,
        error or reason,
        message.client_id,
        message.user_id,
        message.auth_request_id,
        message.device_id,
        _failure_detail(message, reason=reason, error=error, status=status),
    )
    return bool(done)


async def mark_subscription_gone(conn: Queryable, message: OutboxMessage, status: int) -> bool:
    """The push service says the subscription is dead (404/410): fail the message and
    clear the device's subscription unless it was replaced meanwhile (audited
    ``push_subscription_gone``). True if this call cleared it."""
    cleared = await conn.fetchval(
        f"""WITH done AS (
                UPDATE push_outbox SET status = 'failed', leased_until = NULL, last_error = 'gone'
                 WHERE id = $1 AND status = 'queued' AND attempts = $2
             RETURNING id
            ), cleared AS (
                UPDATE devices SET push_endpoint = NULL, push_p256dh = NULL, push_auth = NULL
                 WHERE device_id = $6 AND push_endpoint = $8
             RETURNING device_id
            ), audit_failed AS (
                INSERT INTO audit_events ({_AUDIT_COLUMNS})
                SELECT 'delivery_failed', $3, $4, $5, $6, $7 FROM done
            ), audit_gone AS (
                INSERT INTO audit_events ({_AUDIT_COLUMNS})
                SELECT 'push_subscription_gone', $3, $4, $5, $6, $9 FROM cleared
            )
            SELECT count(*) FROM cleared""",
        message.id,
        message.attempts,
        message.client_id,
        message.user_id,
        message.auth_request_id,
        message.device_id,
        _failure_detail(message, reason="gone", error=f"HTTP {status}", status=status),
        message.endpoint,
        {"message_id": message.id, "status": status},
    )
    return bool(cleared)


async def mark_retry(
    conn: Queryable,
    message: OutboxMessage,
    *,
    delay: float,
    error: str,
    status: int | None,
    max_attempts: int,
) -> str | None:
    """Schedule the next attempt in ``delay`` seconds, unless that is too late.

    Returns the message's new status: ``queued`` (will be retried), ``failed``
    (attempts exhausted), ``dropped`` (the next attempt would come after its
    ``deliver_before``, or its prompt was withdrawn meanwhile); ``None`` if the
    lease was lost. Giving up is audited ``delivery_failed``.
    """
    row = await conn.fetchrow(
        f"""WITH cur AS (
                SELECT o.id,
                       CASE WHEN o.kind = 'prompt' AND r.prompts_withdrawn_at IS NOT NULL
                                 THEN 'withdrawn'
                            WHEN now() + make_interval(secs => $3) >= o.deliver_before
                                 THEN 'expired'
                            WHEN o.attempts >= $4 THEN 'attempts_exhausted'
                       END AS reason
                  FROM push_outbox o LEFT JOIN auth_requests r ON r.id = o.auth_request_id
                 WHERE o.id = $1 AND o.status = 'queued' AND o.attempts = $2
                   FOR UPDATE OF o
            ), upd AS (
                UPDATE push_outbox o
                   SET status = CASE WHEN c.reason IS NULL THEN 'queued'
                                     WHEN c.reason = 'attempts_exhausted' THEN 'failed'
                                     ELSE 'dropped' END,
                       next_attempt_at = CASE WHEN c.reason IS NULL
                                              THEN now() + make_interval(secs => $3)
                                              ELSE o.next_attempt_at END,
                       leased_until = NULL,
                       last_error = coalesce(c.reason || ': ', '') || $5
                  FROM cur c
                 WHERE o.id = c.id
             RETURNING o.status
            ), audit AS (
                INSERT INTO audit_events ({_AUDIT_COLUMNS})
                SELECT 'delivery_failed', $6, $7, $8, $9,
                       $10::jsonb || jsonb_build_object('reason', c.reason)
                  FROM cur c WHERE c.reason IN ('expired', 'attempts_exhausted')
            )
            SELECT status FROM upd""",
        message.id,
        message.attempts,
        float(delay),
        max_attempts,
        error,
        message.client_id,
        message.user_id,
        message.auth_request_id,
        message.device_id,
        _failure_detail(message, reason=None, error=error, status=status),
    )
    return row["status"] if row else None


def _failure_detail(
    message: OutboxMessage, *, reason: str | None, error: str | None, status: int | None
) -> dict[str, Any]:
    return {
        "message_id": message.id,
        "kind": message.kind,
        "attempts": message.attempts,
        "reason": reason,
        "error": error,
        "status": status,
    }


# Withdrawing a request's prompts. Queued prompts not being sent right now are
# dropped; a device whose prompt was sent, is in flight or may have arrived (an
# attempt timed out) gets a ``dismiss`` with the same Topic, which also
# replaces the prompt if the push service still holds it. The request is
# marked withdrawn once, so the sweep and a decision cannot both do it.
_WITHDRAW = (
    """
, withdrawn AS (
    UPDATE auth_requests r SET prompts_withdrawn_at = now()
      FROM targets t
     WHERE r.id = t.id AND r.prompts_withdrawn_at IS NULL
 RETURNING r.id, r.expires_at
), prompts AS (
    SELECT o.id, o.device_id, o.auth_request_id, o.topic, o.withdrawal, o.status
      FROM push_outbox o JOIN withdrawn w ON w.id = o.auth_request_id
     WHERE o.kind = 'prompt'
), unsent AS (
    UPDATE push_outbox o SET status = 'dropped', last_error = 'withdrawn'
      FROM prompts p
     WHERE o.id = p.id AND o.status = 'queued'
       AND (o.leased_until IS NULL OR o.leased_until <= now())
 RETURNING o.id, o.attempts
), dismissed AS (
    INSERT INTO push_outbox (device_id, auth_request_id, kind, topic, payload, deliver_before)
    SELECT DISTINCT ON (p.device_id)
           p.device_id, p.auth_request_id, 'dismiss', p.topic, p.withdrawal,
           greatest(w.expires_at, now()) + make_interval(secs => $2)
      FROM prompts p
      JOIN withdrawn w ON w.id = p.auth_request_id
      JOIN devices d ON d.device_id = p.device_id
     WHERE p.status IN ('queued', 'sent')
       AND p.id NOT IN (SELECT id FROM unsent WHERE attempts = 0)
       AND d.removed_at IS NULL AND d.push_endpoint IS NOT NULL
       AND d.device_id IS DISTINCT FROM $3
  ORDER BY p.device_id
 RETURNING id
), notified AS (
    SELECT pg_notify('"""
    + OUTBOX_CHANNEL
    + """', '') WHERE EXISTS (SELECT 1 FROM dismissed)
)
SELECT (SELECT count(*) FROM withdrawn) AS requests,
       (SELECT count(*) FROM dismissed) AS dismisses,
       (SELECT count(*) FROM notified) AS _n
"""
)


@dataclass(frozen=True)
class Withdrawal:
    requests: int  # requests whose prompts were withdrawn now
    dismisses: int  # dismiss messages queued


async def withdraw_request_prompts(
    conn: asyncpg.Connection, auth_request_id: int, *, except_device: str | None = None
) -> Withdrawal:
    """Withdraw one request's prompts (after a decision), in the caller's transaction.

    ``except_device`` (the device that decided) gets no dismiss.
    """
    row = await conn.fetchrow(
        "WITH targets AS (SELECT $1::bigint AS id)" + _WITHDRAW,
        auth_request_id,
        float(DISMISS_GRACE_SECONDS),
        except_device,
    )
    assert row is not None
    return Withdrawal(row["requests"], row["dismisses"])


async def sweep_withdrawals(conn: Queryable, *, limit: int) -> Withdrawal:
    """Withdraw the prompts of up to ``limit`` requests that ended without a
    recorded decision: expired, denied for poll abuse, revoked, redeemed."""
    row = await conn.fetchrow(
        """WITH targets AS (
               SELECT r.id FROM auth_requests r
                WHERE r.prompts_withdrawn_at IS NULL
                  AND (r.status <> 'pending' OR r.expires_at <= now())
                ORDER BY r.expires_at
                LIMIT $1
                  FOR UPDATE SKIP LOCKED
           )"""
        + _WITHDRAW,
        limit,
        float(DISMISS_GRACE_SECONDS),
        None,
    )
    assert row is not None
    return Withdrawal(row["requests"], row["dismisses"])


async def delete_settled_messages(conn: Queryable, *, older_than: int, limit: int) -> int:
    """Delete up to ``limit`` sent, failed or dropped messages created more than
    ``older_than`` seconds ago; the number deleted."""
    status: str = await conn.execute(
        """DELETE FROM push_outbox
            WHERE id IN (SELECT id FROM push_outbox
                          WHERE created_at < now() - make_interval(secs => $1)
                            AND status <> 'queued'
                          LIMIT $2)""",
        older_than,
        limit,
    )
    return int(status.rsplit(" ", 1)[-1])
