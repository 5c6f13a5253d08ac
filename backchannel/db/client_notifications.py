"""The ``client_notifications`` table: ping and push token delivery (CIBA §10.2, §10.3).

A row is written with each request of a ping or push client (by
``insert_auth_request``) and ``waiting`` until the request ends. The change
that ends it queues the row in the same transaction (:func:`queue_notification`,
used by decisions and revocations); :func:`queue_ended_notifications` sweeps
up the rest (expiry, denial for poll abuse). Workers on any replica then lease
queued rows (``FOR UPDATE SKIP LOCKED`` plus ``leased_until``, at most a few
per client at a time), and every outcome is one conditional statement guarded
by the lease (``status = 'queued' AND attempts = <the attempt leased>``) that
also writes its audit row; the outcomes of many attempts are recorded in one
statement (:func:`settle_notifications`). Sending is at least once.

Statuses: ``waiting``; ``queued``; ``sent``; ``failed`` (refused by the
client's endpoint, or the endpoint refused by the SSRF guard: not retried);
``given_up`` (still failing when its time ran out). Sealed values are erased
when a row leaves ``queued`` for good.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

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


# Settling attempts, any number in one statement: every row is guarded by its lease
# (the attempt number it was leased for), and every ending writes its audit row.
# A retry keeps the row queued for ``next_attempt_at``; any other ending erases the
# sealed values.
_SETTLE = """
WITH outcome AS (
    SELECT *
      FROM unnest($1::bigint[], $2::int[], $3::text[], $4::int[], $5::text[], $6::float8[])
           AS o(id, attempts, ending, status, error, delay)
), settled AS (
    UPDATE client_notifications n
       SET status = CASE WHEN o.ending = 'retry' THEN 'queued' ELSE o.ending END,
           sent_at = CASE WHEN o.ending = 'sent' THEN now() ELSE n.sent_at END,
           next_attempt_at = CASE WHEN o.ending = 'retry'
                                  THEN now() + make_interval(secs => o.delay)
                                  ELSE n.next_attempt_at END,
           auth_req_id_sealed = CASE WHEN o.ending = 'retry' THEN n.auth_req_id_sealed END,
           bearer_sealed = CASE WHEN o.ending = 'retry' THEN n.bearer_sealed END,
           response_sealed = CASE WHEN o.ending = 'retry' THEN n.response_sealed END,
           last_status = o.status, last_error = o.error, leased_until = NULL
      FROM outcome o
     WHERE n.id = o.id AND n.status = 'queued' AND n.attempts = o.attempts
 RETURNING n.id, n.auth_request_id, n.client_id, n.mode, n.attempts, n.status, n.due_at,
           n.outcome, o.ending, o.status AS http_status, o.error
), audit AS (
    INSERT INTO audit_events (event, client_id, user_id, auth_request_id, detail)
    SELECT 'notification_' || s.ending, s.client_id, r.user_id, s.auth_request_id,
           jsonb_build_object('mode', s.mode, 'attempts', s.attempts, 'status', s.http_status,
                              'error', s.error, 'outcome', s.outcome)
      FROM settled s JOIN auth_requests r ON r.id = s.auth_request_id
     WHERE s.ending <> 'retry'
     ORDER BY s.id
)
SELECT id, status, due_at FROM settled
"""

Ending = Literal["sent", "retry", "failed", "given_up"]


@dataclass(frozen=True)
class Settlement:
    """How one leased attempt ended.

    ``sent``: delivered (audited ``notification_sent``); ``retry``: try again in
    ``delay`` seconds (not audited: the metrics count retries); ``failed``: refused
    for good (a 4xx, a redirect, an unsafe endpoint; ``notification_failed``);
    ``given_up``: still failing when its time ran out (``notification_given_up``).
    """

    job: NotificationJob
    ending: Ending
    status: int | None = None  # the endpoint's HTTP status, if it answered
    error: str | None = None
    delay: float = 0.0


@dataclass(frozen=True)
class Settled:
    status: str
    due_at: datetime


async def settle_notifications(
    conn: Queryable, settlements: Sequence[Settlement]
) -> dict[int, Settled]:
    """Record how each leased attempt ended, all in one statement; by notification id,
    those whose lease still held (an attempt whose lease was lost is left alone)."""
    if not settlements:
        return {}
    rows = await conn.fetch(
        _SETTLE,
        [s.job.id for s in settlements],
        [s.job.attempts for s in settlements],
        [s.ending for s in settlements],
        [s.status for s in settlements],
        [s.error for s in settlements],
        [s.delay for s in settlements],
    )
    return {r["id"]: Settled(r["status"], r["due_at"]) for r in rows}


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
