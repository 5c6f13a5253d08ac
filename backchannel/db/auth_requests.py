"""The ``auth_requests`` table: backchannel authentication requests and their poll state.

Each state change is one conditional statement, so concurrent polls, decisions
and redemptions have exactly one winner; the audit row for a change is
written by the same statement or transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg

from backchannel.db.named_sql import NamedSQL
from backchannel.db.pool import Queryable
from backchannel.db.prompt_limits import PromptState
from backchannel.db.push_outbox import OUTBOX_CHANNEL


@dataclass(frozen=True)
class NewAuthRequest:
    id_hash: bytes
    client_id: str
    user_id: int
    scope: tuple[str, ...]
    acr_values: tuple[str, ...] | None
    binding_message: str | None
    delivery_mode: str
    requested_expiry: int | None
    expires_at: datetime
    poll_interval: int
    # What the user's device signs its decision over (docs/device-api.md).
    device_challenge: str | None = None
    # Number matching: the right number and the choices the phone offers.
    number_match: str | None = None
    number_choices: tuple[str, ...] | None = None
    # What the approval must show (docs/policy.md, require-uv; docs/relying-parties.md, acr).
    user_verification: str | None = None  # 'required' | 'would_require'
    acr: str | None = None
    # RFC 9396: what exactly the user approves (a payment: amount, payee), validated.
    authorization_details: tuple[dict[str, Any], ...] | None = None


@dataclass(frozen=True)
class QueuedPrompt:
    """The push message each of the user's devices is sent for a new request."""

    topic: str
    payload: dict[str, Any]
    # The message that withdraws the prompt (a dismiss), sent should the request end
    # while the prompt may be on the phone.
    withdrawal: dict[str, Any]


@dataclass(frozen=True)
class SealedNotification:
    """What a ping or push client's notification will need (``client_notifications``):
    the auth_req_id and the client's bearer token, both sealed by the caller."""

    mode: str  # ping | push
    auth_req_id_sealed: str
    bearer_sealed: str


@dataclass(frozen=True)
class PromptCaps:
    """Push-fatigue caps the insert itself enforces; 0 turns a cap off."""

    max_pending: int = 0
    max_prompts: int = 0
    window: int = 600
    honour_mutes: bool = False


@dataclass(frozen=True)
class IssuedAuthRequest:
    """The stored request, or (``id`` None) a refusal by a cap; ``state`` is what was counted."""

    id: int | None
    expires_at: datetime | None
    state: PromptState


@dataclass(frozen=True)
class PollLimits:
    """The pacing rules a poll is judged by (from settings)."""

    grace_ms: int
    lock_after: int
    lock_seconds: int
    deny_after: int
    interval_step: int
    interval_max: int


class PollVerdict(StrEnum):
    """What the poll statement decided; its values are the statement's own words."""

    PENDING = "pending"
    APPROVED = "approved"
    SLOW_DOWN = "slow_down"  # a strike: polled inside the interval, which grows
    LOCK = "lock"  # a strike that starts a temporary lock
    LOCKED = "locked"  # a strike: polled during the lock
    ABUSE_DENIED = "abuse_denied"  # the strike that ended the request
    DENIED = "denied"
    EXPIRED = "expired"
    SPENT = "spent"


@dataclass(frozen=True)
class Redemption:
    """What an approved request grants."""

    id: int
    user_id: int
    subject: str
    scope: tuple[str, ...]
    acr_values: tuple[str, ...] | None
    decided_at: datetime
    acr: str | None = None
    amr: tuple[str, ...] | None = None
    authorization_details: tuple[dict[str, Any], ...] | None = None


@dataclass(frozen=True)
class PollResult:
    """What one poll found."""

    verdict: PollVerdict
    id: int
    user_id: int
    poll_interval: int
    retry_after: int
    denial_reason: str | None = None  # why a denied request was denied (not_me, user, ...)
    # An approved request: what it grants, as the poll read it, and the database time of
    # that read (what tokens signed before the redemption take as their issue time).
    approval: Redemption | None = None
    read_at: datetime | None = None


@dataclass(frozen=True)
class Decision:
    id: int
    client_id: str
    user_id: int
    status: str
    denial_reason: str | None
    created_at: datetime | None = None
    decided_at: datetime | None = None
    delivery_mode: str = "poll"


_INSERT_TEMPLATE = """WITH state AS (
           SELECT CASE WHEN :max_pending > 0 THEN (SELECT count(*) FROM (
                      SELECT 1 FROM auth_requests
                       WHERE user_id = :user_id AND status = 'pending' AND expires_at > now()
                       LIMIT :max_pending) p) ELSE 0 END AS pending,
                  CASE WHEN :max_prompts > 0 THEN (SELECT count(*) FROM (
                      SELECT 1 FROM auth_requests
                       WHERE user_id = :user_id
                         AND created_at > now() - make_interval(secs => :window)
                       LIMIT :max_prompts) w) ELSE 0 END AS recent,
                  CASE WHEN :honour_mutes THEN (SELECT max(until) FROM user_prompt_mutes
                                                 WHERE user_id = :user_id AND until > now())
                  END AS muted_until
       ), ins AS (
           INSERT INTO auth_requests
                  (id_hash, client_id, user_id, scope, acr_values, binding_message,
                   delivery_mode, requested_expiry, expires_at, poll_interval,
                   device_challenge, number_match, number_choices, user_verification, acr,
                   authorization_details)
           SELECT :id_hash::bytea, :client_id::text, :user_id::bigint, :scope::text[],
                  :acr_values::text[], :binding_message::text, :delivery_mode::text,
                  :requested_expiry::integer,
                  :expires_at::timestamptz, :poll_interval::integer, :device_challenge::text,
                  :number_match::text, :number_choices::text[], :user_verification::text,
                  :acr::text, :authorization_details::jsonb
             FROM state
            WHERE (:max_pending = 0 OR state.pending < :max_pending)
              AND (:max_prompts = 0 OR state.recent < :max_prompts)
              AND state.muted_until IS NULL
        RETURNING id, client_id, user_id, expires_at
       ), audit AS (
           INSERT INTO audit_events (event, client_id, user_id, auth_request_id, detail)
           SELECT 'auth_request_issued', client_id, user_id, id, :audit_detail FROM ins
       ), prompts AS (
           INSERT INTO push_outbox (device_id, auth_request_id, kind, topic, payload,
                                    withdrawal, deliver_before)
           SELECT d.device_id, ins.id, 'prompt', :prompt_topic, :prompt_payload,
                  :prompt_withdrawal, ins.expires_at
             FROM ins JOIN devices d ON d.user_id = ins.user_id
            WHERE d.removed_at IS NULL AND d.push_endpoint IS NOT NULL
        RETURNING id
       ), notified AS (
           SELECT pg_notify('{outbox}', '') WHERE EXISTS (SELECT 1 FROM prompts)
       ){notification}
       SELECT ins.id, ins.expires_at, s.pending, s.recent, s.muted_until,
              (SELECT count(*) FROM notified) AS _n
         FROM state s LEFT JOIN ins ON true"""
# Ping and push clients: the notification row is written with the request.
_NOTIFICATION_CTE = """, notification AS (
           INSERT INTO client_notifications
                  (auth_request_id, client_id, mode, auth_req_id_sealed, bearer_sealed)
           SELECT id, client_id, :notification_mode, :auth_req_id_sealed, :bearer_sealed
             FROM ins
       )"""
_INSERT = NamedSQL(_INSERT_TEMPLATE.format(outbox=OUTBOX_CHANNEL, notification=""))
_INSERT_NOTIFYING = NamedSQL(
    _INSERT_TEMPLATE.format(outbox=OUTBOX_CHANNEL, notification=_NOTIFICATION_CTE)
)


async def insert_auth_request(
    conn: Queryable,
    request: NewAuthRequest,
    prompt: QueuedPrompt,
    audit_detail: dict[str, Any],
    caps: PromptCaps = PromptCaps(),
    notification: SealedNotification | None = None,
) -> IssuedAuthRequest:
    """Store a new pending request and its ``auth_request_issued`` audit row atomically,
    unless the user is muted or at a push-fatigue cap (then nothing is written).

    The same statement counts the user's pending and recent requests (index
    scans stopping at the cap), queues ``prompt`` to each of the user's active
    devices with a subscription, and wakes the outbox workers; for a ping or
    push client it also writes the request's ``notification``. Concurrent
    requests for one user may overshoot a cap by at most their number minus one.
    """
    values: dict[str, Any] = {
        "id_hash": request.id_hash,
        "client_id": request.client_id,
        "user_id": request.user_id,
        "scope": list(request.scope),
        "acr_values": _list_or_none(request.acr_values),
        "binding_message": request.binding_message,
        "delivery_mode": request.delivery_mode,
        "requested_expiry": request.requested_expiry,
        "expires_at": request.expires_at,
        "poll_interval": request.poll_interval,
        "device_challenge": request.device_challenge,
        "number_match": request.number_match,
        "number_choices": _list_or_none(request.number_choices),
        "user_verification": request.user_verification,
        "acr": request.acr,
        "authorization_details": (
            list(request.authorization_details)
            if request.authorization_details is not None
            else None
        ),
        "audit_detail": audit_detail,
        "prompt_topic": prompt.topic,
        "prompt_payload": prompt.payload,
        "prompt_withdrawal": prompt.withdrawal,
        "max_pending": caps.max_pending,
        "max_prompts": caps.max_prompts,
        "window": caps.window,
        "honour_mutes": caps.honour_mutes,
    }
    statement = _INSERT
    if notification is not None:
        statement = _INSERT_NOTIFYING
        values["notification_mode"] = notification.mode
        values["auth_req_id_sealed"] = notification.auth_req_id_sealed
        values["bearer_sealed"] = notification.bearer_sealed
    row = await conn.fetchrow(statement.sql, *statement.args(values))
    assert row is not None
    state = PromptState(row["pending"], row["recent"], row["muted_until"], frozenset())
    return IssuedAuthRequest(row["id"], row["expires_at"], state)


def _list_or_none(values: tuple[str, ...] | None) -> list[str] | None:
    return list(values) if values is not None else None


# What an approved request grants, read by the poll that finds it approved (the subject
# only then), so its tokens can be signed before the one statement that redeems it and
# stores them. While a request is approved these columns do not change: a decision
# changes only pending requests, and a revocation ends it (denied), which the
# redemption's own status check then sees.
_APPROVAL = """CASE WHEN {approved} THEN (SELECT who.subject FROM users who
                                             WHERE who.user_id = {r}.user_id) END AS subject,
          {r}.scope, {r}.acr_values, {r}.decided_at, {r}.acr, {r}.amr,
          {r}.authorization_details, now() AS read_at"""


# A well-paced poll of a pending or approved request, the common case, is one plain
# conditional UPDATE: it records the poll only if no strike applies (the request is
# live, not locked, and the interval has passed), under the row lock, re-checked on
# the newest row version if another poll got there first. Its pacing is ephemeral (a
# crash forgets at most when it was last polled), so its commit does not wait for the
# WAL flush: ``set_config(..., true)`` is ``SET LOCAL synchronous_commit = off`` for
# this statement's transaction. Anything else (no row) goes to _POLL, which judges
# strikes and terminal states and commits them durably.
_POLL_PACED = """
UPDATE auth_requests
   SET last_polled_at = now(), poll_count = poll_count + 1
 WHERE id_hash = $1 AND client_id = $2
   AND status IN ('pending', 'approved') AND expires_at > now()
   AND (locked_until IS NULL OR locked_until <= now() + make_interval(secs => $3 / 1000.0))
   AND (last_polled_at IS NULL
        OR now() - last_polled_at >= make_interval(secs => poll_interval - $3 / 1000.0))
RETURNING status AS verdict, id, user_id, poll_interval, denial_reason,
          greatest(1, ceil(extract(epoch FROM greatest(
              locked_until, now() + make_interval(secs => poll_interval)) - now())))::int
              AS retry_after,
          set_config('synchronous_commit', 'off', true) AS _commit,
          {approval}
""".format(approval=_APPROVAL.format(r="auth_requests", approved="status = 'approved'"))

# One statement judges a poll and records its pacing: the interval a slow_down
# raises is written together with the poll time, under the row lock, so polls
# spread over several replicas cannot reset it. Strikes (too-fast polls and
# polls during a lock) escalate from slow_down to a temporary lock to a terminal
# denial; each strike is audited by the same statement.
#
# ``retry_after`` is the earliest moment a poll is accepted without a strike:
# the later of the lock's end and the current interval's end. A client that
# waits it out (RFC 9110 §10.2.3) is therefore never struck again.
_POLL = """
WITH cur AS (
    SELECT id, user_id, status, denial_reason, expires_at, poll_interval, last_polled_at,
           poll_strikes, locked_until, now() AS t, scope, acr_values, decided_at, acr, amr,
           authorization_details
      FROM auth_requests
     WHERE id_hash = $1 AND client_id = $2
       FOR UPDATE
), judged AS (
    SELECT cur.*,
           CASE
             WHEN status = 'redeemed' THEN 'spent'
             WHEN status = 'denied' THEN 'denied'
             WHEN expires_at <= t THEN 'expired'
             WHEN locked_until > t + make_interval(secs => $3 / 1000.0) THEN
                  CASE WHEN poll_strikes + 1 >= $6 THEN 'abuse_denied' ELSE 'locked' END
             WHEN last_polled_at IS NOT NULL
                  AND t - last_polled_at
                      < make_interval(secs => poll_interval - $3 / 1000.0) THEN
                  CASE WHEN poll_strikes + 1 >= $6 THEN 'abuse_denied'
                       WHEN poll_strikes + 1 >= $4 THEN 'lock'
                       ELSE 'slow_down' END
             WHEN status = 'approved' THEN 'approved'
             ELSE 'pending'
           END AS verdict
      FROM cur
), upd AS (
    UPDATE auth_requests r SET
           last_polled_at = j.t,
           poll_count = r.poll_count + 1,
           poll_strikes = r.poll_strikes
               + CASE WHEN j.verdict IN ('slow_down', 'lock', 'locked', 'abuse_denied')
                      THEN 1 ELSE 0 END,
           poll_interval = CASE WHEN j.verdict = 'slow_down'
                                THEN least(r.poll_interval + $7, $8)
                                ELSE r.poll_interval END,
           locked_until = CASE WHEN j.verdict = 'lock'
                               THEN j.t + make_interval(secs => $5)
                               ELSE r.locked_until END,
           lock_count = r.lock_count + CASE WHEN j.verdict = 'lock' THEN 1 ELSE 0 END,
           status = CASE WHEN j.verdict = 'abuse_denied' THEN 'denied' ELSE r.status END,
           denial_reason = CASE WHEN j.verdict = 'abuse_denied' THEN 'poll_abuse'
                                ELSE r.denial_reason END,
           decided_at = CASE WHEN j.verdict = 'abuse_denied' THEN j.t ELSE r.decided_at END
      FROM judged j
     WHERE r.id = j.id AND j.verdict IN
           ('pending', 'approved', 'slow_down', 'lock', 'locked', 'abuse_denied')
 RETURNING r.id, r.poll_interval, r.poll_strikes, r.locked_until, r.last_polled_at
), audit AS (
    INSERT INTO audit_events (event, client_id, user_id, auth_request_id, detail)
    SELECT CASE j.verdict WHEN 'slow_down' THEN 'poll_slow_down'
                          WHEN 'lock' THEN 'poll_locked'
                          WHEN 'locked' THEN 'poll_refused_locked'
                          ELSE 'poll_abuse_denied' END,
           $2, j.user_id, j.id,
           jsonb_build_object('strikes', u.poll_strikes, 'interval', u.poll_interval,
                              'locked_until', u.locked_until)
      FROM judged j JOIN upd u ON u.id = j.id
     WHERE j.verdict IN ('slow_down', 'lock', 'locked', 'abuse_denied')
), notified AS (
    SELECT pg_notify('bc_decision', encode($1, 'hex'))
      FROM judged WHERE verdict = 'abuse_denied'
)
SELECT j.verdict, j.id, j.user_id, j.denial_reason,
       coalesce(u.poll_interval, j.poll_interval) AS poll_interval,
       greatest(1, ceil(extract(epoch FROM greatest(
           coalesce(u.locked_until, j.locked_until),
           coalesce(u.last_polled_at, j.last_polled_at)
               + make_interval(secs => coalesce(u.poll_interval, j.poll_interval))) - j.t)))::int
           AS retry_after,
       (SELECT count(*) FROM notified) AS _n,
       {approval}
  FROM judged j LEFT JOIN upd u ON u.id = j.id
""".format(approval=_APPROVAL.format(r="j", approved="j.verdict = 'approved'"))


# After a long-poll wake-up the state is re-read, not polled: nothing is recorded, so
# this reads without taking the row lock or writing the row.
_REREAD = """
SELECT CASE WHEN status = 'redeemed' THEN 'spent'
            WHEN status = 'denied' THEN 'denied'
            WHEN expires_at <= now() THEN 'expired'
            WHEN status = 'approved' THEN 'approved'
            ELSE 'pending'
       END AS verdict,
       id, user_id, denial_reason, poll_interval,
       greatest(1, ceil(extract(epoch FROM greatest(
           locked_until, last_polled_at + make_interval(secs => poll_interval)) - now())))::int
           AS retry_after,
       {approval}
  FROM auth_requests
 WHERE id_hash = $1 AND client_id = $2
""".format(
    approval=_APPROVAL.format(
        r="auth_requests", approved="status = 'approved' AND expires_at > now()"
    )
)


_VERDICTS = {verdict.value: verdict for verdict in PollVerdict}


async def poll_auth_request(
    conn: Queryable,
    id_hash: bytes,
    client_id: str,
    limits: PollLimits,
    *,
    counts_as_poll: bool = True,
) -> PollResult | None:
    """Judge one token poll; ``None`` when no request with that id belongs to the client.

    ``counts_as_poll=False`` re-reads the state after a long-poll wake-up
    without touching the pacing: a plain read, no row lock, nothing written.
    """
    if not counts_as_poll:
        row = await conn.fetchrow(_REREAD, id_hash, client_id)
    else:
        row = await conn.fetchrow(_POLL_PACED, id_hash, client_id, limits.grace_ms)
        if row is None:
            row = await _judge_poll(conn, id_hash, client_id, limits)
    if row is None:
        return None
    retry_after = row["retry_after"] if row["retry_after"] is not None else 1
    verdict = _VERDICTS[row["verdict"]]
    return PollResult(
        verdict,
        row["id"],
        row["user_id"],
        row["poll_interval"],
        retry_after,
        row["denial_reason"],
        _redemption(row) if verdict is PollVerdict.APPROVED else None,
        row["read_at"],
    )


async def _judge_poll(
    conn: Queryable, id_hash: bytes, client_id: str, limits: PollLimits
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        _POLL,
        id_hash,
        client_id,
        limits.grace_ms,
        limits.lock_after,
        limits.lock_seconds,
        limits.deny_after,
        limits.interval_step,
        limits.interval_max,
    )


async def redeem_auth_request(conn: asyncpg.Connection, request_id: int) -> Redemption | None:
    """Spend an approved, unexpired request; exactly one caller gets the row."""
    row = await conn.fetchrow(
        """UPDATE auth_requests r
              SET status = 'redeemed', redeemed_at = now()
             FROM users u
            WHERE r.id = $1 AND r.status = 'approved' AND r.expires_at > now()
              AND u.user_id = r.user_id
        RETURNING r.id, r.user_id, u.subject, r.scope, r.acr_values, r.decided_at,
                  r.acr, r.amr, r.authorization_details""",
        request_id,
    )
    return _redemption(row) if row is not None else None


def _redemption(row: asyncpg.Record) -> Redemption:
    return Redemption(
        row["id"],
        row["user_id"],
        row["subject"],
        tuple(row["scope"]),
        tuple(row["acr_values"]) if row["acr_values"] is not None else None,
        row["decided_at"],
        row["acr"],
        tuple(row["amr"]) if row["amr"] is not None else None,
        tuple(row["authorization_details"]) if row["authorization_details"] is not None else None,
    )


async def decide_auth_request(
    conn: asyncpg.Connection,
    id_hash: bytes,
    status: str,
    *,
    device_id: str | None,
    reason: str | None,
    amr: Sequence[str] | None = None,
    user_verified: bool = False,
    audit_detail: dict[str, Any] | None = None,
    notify_channel: str | None = None,
) -> Decision | None:
    """Record approve/deny on a pending, unexpired request; ``None`` if it was not pending
    or is an approval of a request that requires user verification without
    ``user_verified``.

    In the same statement: an approval's ``amr``; with ``audit_detail``, the
    ``auth_request_decided`` audit row; with ``notify_channel``, a NOTIFY on it
    whose payload is ``id_hash`` in hex (delivered at commit).
    """
    row = await conn.fetchrow(
        """WITH decided AS (
               UPDATE auth_requests
                  SET status = $2, decided_at = now(), decided_by_device = $3,
                      denial_reason = $4,
                      amr = CASE WHEN $2 = 'approved' AND $5::text[] IS NOT NULL
                                 THEN $5::text[] ELSE amr END
                WHERE id_hash = $1 AND status = 'pending' AND expires_at > now()
                  AND ($2 <> 'approved' OR $6::boolean
                       OR user_verification IS DISTINCT FROM 'required')
            RETURNING id, client_id, user_id, status, denial_reason, created_at, decided_at,
                      delivery_mode
           ), audit AS (
               INSERT INTO audit_events (event, client_id, user_id, auth_request_id, device_id,
                                         detail)
               SELECT 'auth_request_decided', client_id, user_id, id, $3, $7::jsonb
                 FROM decided WHERE $7::jsonb IS NOT NULL
           ), notified AS (
               SELECT pg_notify($8, encode($1, 'hex')) FROM decided WHERE $8::text IS NOT NULL
           )
           SELECT id, client_id, user_id, status, denial_reason, created_at, decided_at,
                  delivery_mode, (SELECT count(*) FROM notified) AS _notified
             FROM decided""",
        id_hash,
        status,
        device_id,
        reason,
        list(amr) if amr else None,
        user_verified,
        audit_detail,
        notify_channel,
    )
    if row is None:
        return None
    values = dict(row)
    del values["_notified"]
    return Decision(**values)


async def select_decision_obstacle(
    conn: Queryable, id_hash: bytes
) -> tuple[str, str | None] | None:
    """Why a request took no decision: its state (pending, approved, denied, redeemed or
    expired) and what it demands (``user_verification``); ``None`` if unknown."""
    row = await conn.fetchrow(
        """SELECT CASE WHEN status IN ('pending', 'approved') AND expires_at <= now()
                       THEN 'expired' ELSE status END AS state, user_verification
             FROM auth_requests WHERE id_hash = $1""",
        id_hash,
    )
    return (row["state"], row["user_verification"]) if row else None


async def select_auth_request_status(conn: Queryable, id_hash: bytes) -> str | None:
    """pending, approved, denied, redeemed or expired (a pending request past its expiry)."""
    value: str | None = await conn.fetchval(
        """SELECT CASE WHEN status IN ('pending', 'approved') AND expires_at <= now()
                       THEN 'expired' ELSE status END
             FROM auth_requests WHERE id_hash = $1""",
        id_hash,
    )
    return value
