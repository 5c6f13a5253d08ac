"""The ``client_notifications`` table: ping and push token delivery (CIBA §10.2, §10.3).

A row is written with each request of a ping or push client (by
``insert_auth_request``) and ``waiting`` until the request ends. The change
that ends it queues the row in the same transaction (:func:`queue_notification`,
used by decisions and revocations); :func:`queue_ended_notifications` sweeps
up the rest (expiry, denial for poll abuse). Workers on any replica then lease
queued rows (``FOR UPDATE SKIP LOCKED`` plus ``leased_until``, at most a few
per client at a time), and every outcome is one conditional statement guarded
by the lease (``status = 'queued' AND attempts = <the attempt leased>``) that
also writes its audit row. Sending is at least once.

Statuses: ``waiting``; ``queued``; ``sent``; ``failed`` (refused by the
client's endpoint, or the endpoint refused by the SSRF guard: not retried);
``given_up`` (still failing when its time ran out). Sealed values are erased
when a row leaves ``queued`` for good.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from backchannel.db.pool import Queryable

# LISTEN channel woken whenever notifications are queued; the payload is empty.
NOTIFICATION_CHANNEL = "bc_notify"


def sealed_field(id_hash: bytes, field: str) -> str:
    """The row name a sealed value is bound to (the key-wrapping associated data)."""
    return f"client_notifications:{id_hash.hex()}:{field}"


@dataclass(frozen=True)
class NotificationJob:
    """A leased notification with what sending it needs."""

    id: int
    auth_request_id: int
    id_hash: bytes
    client_id: str
    mode: str  # ping | push
    outcome: str  # approved | denied | expired
    denial_reason: str | None
    attempts: int  # including the attempt this lease is for
    endpoint: str | None
    auth_req_id_sealed: str | None
    bearer_sealed: str | None
    response_sealed: str | None
    due_at: datetime  # when the request ended


_QUEUE = (
    """
UPDATE client_notifications n
   SET status = 'queued', outcome = $2, denial_reason = $3, due_at = now(),
       next_attempt_at = now()
 WHERE n.auth_request_id = $1 AND n.status = 'waiting'
RETURNING n.id, pg_notify('"""
    + NOTIFICATION_CHANNEL
    + """', '') AS _n
"""
)


async def queue_notification(
    conn: Queryable,
    auth_request_id: int,
    outcome: str,
    *,
    denial_reason: str | None = None,
) -> bool:
    """Queue the request's notification (ending state ``outcome``), in the caller's
    transaction; False if it has none or it was queued already."""
    row = await conn.fetchrow(_QUEUE, auth_request_id, outcome, denial_reason)
    return row is not None


async def queue_ended_notifications(conn: Queryable, *, limit: int) -> int:
    """Queue the waiting notifications of up to ``limit`` requests that ended without
    a change that queued them (expiry, denial for poll abuse); how many."""
    queued: int = await conn.fetchval(
        """WITH ended AS (
               SELECT n.id, r.status, r.denial_reason
                 FROM client_notifications n
                 JOIN auth_requests r ON r.id = n.auth_request_id
                WHERE n.status = 'waiting'
                  AND (r.status IN ('denied', 'redeemed') OR r.expires_at <= now())
                ORDER BY n.id
                LIMIT $1
                  FOR UPDATE OF n SKIP LOCKED
           ), queued AS (
               UPDATE client_notifications n
                  SET status = 'queued',
                      outcome = CASE e.status WHEN 'denied' THEN 'denied'
                                              WHEN 'redeemed' THEN 'approved'
                                              ELSE 'expired' END,
                      denial_reason = e.denial_reason,
                      due_at = now(), next_attempt_at = now()
                 FROM ended e
                WHERE n.id = e.id
            RETURNING n.id
           ), notified AS (
               SELECT pg_notify('"""
        + NOTIFICATION_CHANNEL
        + """', '') WHERE EXISTS (SELECT 1 FROM queued)
           )
           SELECT (SELECT count(*) FROM queued) + 0 * (SELECT count(*) FROM notified)""",
        limit,
    )
    return queued


_CLAIM = """
WITH ranked AS (
    SELECT n.id, n.client_id,
           row_number() OVER (PARTITION BY n.client_id ORDER BY n.next_attempt_at, n.id) AS rank
      FROM client_notifications n
     WHERE n.status = 'queued' AND n.next_attempt_at <= now()
       AND (n.leased_until IS NULL OR n.leased_until <= now())
), picked AS (
    SELECT r.id
      FROM ranked r
      LEFT JOIN unnest($3::text[], $4::int[]) AS busy(client_id, sending)
             ON busy.client_id = r.client_id
     WHERE r.rank <= $2 - coalesce(busy.sending, 0)
     ORDER BY r.id
     LIMIT $1
), leased AS (
    UPDATE client_notifications n
       SET leased_until = now() + make_interval(secs => $5), attempts = n.attempts + 1
      FROM picked
     WHERE n.id = picked.id AND n.status = 'queued'
       AND (n.leased_until IS NULL OR n.leased_until <= now())
 RETURNING n.*
)
SELECT l.id, l.auth_request_id, r.id_hash, l.client_id, l.mode, l.outcome, l.denial_reason,
       l.attempts, c.backchannel_client_notification_endpoint AS endpoint,
       l.auth_req_id_sealed, l.bearer_sealed, l.response_sealed, l.due_at
  FROM leased l
  JOIN auth_requests r ON r.id = l.auth_request_id
  JOIN clients c ON c.client_id = l.client_id
 ORDER BY l.id
"""


async def claim_notifications(
    conn: Queryable,
    *,
    limit: int,
    per_client: int,
    sending: dict[str, int],
    lease_seconds: float,
) -> list[NotificationJob]:
    """Lease up to ``limit`` due notifications, at most ``per_client`` per client
    counting the ``sending`` ones this worker already has in flight.

    The UPDATE re-checks each row, so concurrent workers never lease one twice.
    """
    rows = await conn.fetch(
        _CLAIM,
        limit,
        per_client,
        list(sending),
        list(sending.values()),
        lease_seconds,
    )
    return [
        NotificationJob(
            id=r["id"],
            auth_request_id=r["auth_request_id"],
            id_hash=bytes(r["id_hash"]),
            client_id=r["client_id"],
            mode=r["mode"],
            outcome=r["outcome"],
            denial_reason=r["denial_reason"],
            attempts=r["attempts"],
            endpoint=r["endpoint"],
            auth_req_id_sealed=r["auth_req_id_sealed"],
            bearer_sealed=r["bearer_sealed"],
            response_sealed=r["response_sealed"],
            due_at=r["due_at"],
        )
        for r in rows
    ]


async def store_push_response(
    conn: asyncpg.Connection, job: NotificationJob, response_sealed: str
) -> bool:
    """Keep the minted token response for every later attempt; False if the lease was lost
    (the caller's transaction must then roll back, minting included)."""
    row = await conn.fetchrow(
        """UPDATE client_notifications SET response_sealed = $3
            WHERE id = $1 AND status = 'queued' AND attempts = $2
              AND response_sealed IS NULL
        RETURNING id""",
        job.id,
        job.attempts,
        response_sealed,
    )
    return row is not None


# Settling an attempt: every statement is guarded by the lease (the attempt
# number it was leased for) and writes its audit row.
_SETTLE = """
WITH settled AS (
    UPDATE client_notifications SET {changes}, last_status = $3, last_error = $4,
           leased_until = NULL
     WHERE id = $1 AND status = 'queued' AND attempts = $2
 RETURNING id, auth_request_id, client_id, mode, attempts, status, due_at
), audit AS (
    INSERT INTO audit_events (event, client_id, user_id, auth_request_id, detail)
    SELECT $5::text, s.client_id, r.user_id, s.auth_request_id,
           jsonb_build_object('mode', s.mode, 'attempts', s.attempts, 'status', $3::int,
                              'error', $4::text, 'outcome', $6::text)
      FROM settled s JOIN auth_requests r ON r.id = s.auth_request_id
     WHERE $5::text IS NOT NULL
)
SELECT status, due_at FROM settled
"""
_ERASE = "auth_req_id_sealed = NULL, bearer_sealed = NULL, response_sealed = NULL"
_SENT = _SETTLE.format(changes=f"status = 'sent', sent_at = now(), {_ERASE}")
_FAILED = _SETTLE.format(changes=f"status = 'failed', {_ERASE}")
_GIVEN_UP = _SETTLE.format(changes=f"status = 'given_up', {_ERASE}")
_RETRY = _SETTLE.format(changes="next_attempt_at = now() + make_interval(secs => $7)")


@dataclass(frozen=True)
class Settled:
    status: str
    due_at: datetime


async def _settle(
    conn: Queryable,
    sql: str,
    job: NotificationJob,
    *,
    status: int | None,
    error: str | None,
    event: str | None,
    extra: Sequence[Any] = (),
) -> Settled | None:
    row = await conn.fetchrow(sql, job.id, job.attempts, status, error, event, job.outcome, *extra)
    return Settled(row["status"], row["due_at"]) if row else None


async def mark_notification_sent(
    conn: Queryable, job: NotificationJob, status: int
) -> Settled | None:
    """Delivered: erase the sealed values; audited ``notification_sent``. None if the
    lease was lost."""
    return await _settle(conn, _SENT, job, status=status, error=None, event="notification_sent")


async def mark_notification_failed(
    conn: Queryable, job: NotificationJob, *, status: int | None, error: str
) -> Settled | None:
    """Refused for good (a 4xx, a redirect, an unsafe endpoint); audited
    ``notification_failed``."""
    return await _settle(
        conn, _FAILED, job, status=status, error=error, event="notification_failed"
    )


async def mark_notification_given_up(
    conn: Queryable, job: NotificationJob, *, status: int | None, error: str
) -> Settled | None:
    """Still failing when its time ran out; audited ``notification_given_up``."""
    return await _settle(
        conn, _GIVEN_UP, job, status=status, error=error, event="notification_given_up"
    )


async def mark_notification_retry(
    conn: Queryable, job: NotificationJob, *, delay: float, status: int | None, error: str
) -> Settled | None:
    """Try again in ``delay`` seconds (not audited: the metrics count retries)."""
    return await _settle(conn, _RETRY, job, status=status, error=error, event=None, extra=(delay,))


async def delete_settled_notifications(conn: Queryable, *, older_than: int, limit: int) -> int:
    """Delete up to ``limit`` sent, failed or given-up rows created more than
    ``older_than`` seconds ago; the number deleted."""
    status: str = await conn.execute(
        """DELETE FROM client_notifications
            WHERE id IN (SELECT id FROM client_notifications
                          WHERE created_at < now() - make_interval(secs => $1)
                            AND status IN ('sent', 'failed', 'given_up')
                          LIMIT $2)""",
        older_than,
        limit,
    )
    return int(status.rsplit(" ", 1)[-1])
