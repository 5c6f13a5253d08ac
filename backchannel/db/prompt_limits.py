"""What push-fatigue limits read and write: a user's prompt counts and mutes,
and a client's "not me" reports (backchannel/policy/fatigue.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from backchannel.db.pool import Queryable


@dataclass(frozen=True)
class PromptState:
    """A user's prompting state. Counts stop at the cap they are checked against."""

    pending: int
    recent: int
    muted_until: datetime | None
    groups: frozenset[str]


@dataclass(frozen=True)
class ReportCount:
    reporters: int
    suspended_at: datetime | None  # set when this call suspended the client


async def select_prompt_state(
    conn: Queryable,
    user_id: int,
    *,
    pending_cap: int,
    recent_cap: int,
    window: int,
    with_groups: bool,
) -> PromptState:
    """One round trip: pending and recent requests (index scans, at most cap rows each),
    the latest active mute, and the user's groups when asked."""
    row = await conn.fetchrow(
        """SELECT
             (SELECT count(*) FROM (
                 SELECT 1 FROM auth_requests
                  WHERE user_id = $1 AND status = 'pending' AND expires_at > now()
                  LIMIT $2) p) AS pending,
             (SELECT count(*) FROM (
                 SELECT 1 FROM auth_requests
                  WHERE user_id = $1 AND created_at > now() - make_interval(secs => $4)
                  LIMIT $3) w) AS recent,
             (SELECT max(until) FROM user_prompt_mutes
               WHERE user_id = $1 AND until > now()) AS muted_until,
             CASE WHEN $5 THEN ARRAY(SELECT group_name FROM user_groups WHERE user_id = $1)
             END AS groups""",
        user_id,
        pending_cap,
        recent_cap,
        window,
        with_groups,
    )
    assert row is not None
    return PromptState(
        row["pending"], row["recent"], row["muted_until"], frozenset(row["groups"] or ())
    )


async def insert_prompt_mute(
    conn: asyncpg.Connection,
    user_id: int,
    seconds: int,
    *,
    reason: str,
    client_id: str | None,
    auth_request_id: int | None,
) -> datetime:
    """Mute the user's prompts for ``seconds`` from now; return until when."""
    until: datetime = await conn.fetchval(
        """INSERT INTO user_prompt_mutes (user_id, until, reason, client_id, auth_request_id)
           VALUES ($1, now() + make_interval(secs => $2), $3, $4, $5) RETURNING until""",
        user_id,
        seconds,
        reason,
        client_id,
        auth_request_id,
    )
    return until


async def lock_client_reports(conn: asyncpg.Connection, client_id: str) -> None:
    """Serialise report counting for one client until the transaction ends.

    Under READ COMMITTED the count that follows then sees every report
    committed before it, so concurrent reports cannot each miss the other.
    """
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('bc_not_me:' || $1))", client_id)


async def suspend_client_on_reports(
    conn: asyncpg.Connection, client_id: str, *, threshold: int, window: int
) -> ReportCount:
    """Count the distinct users who reported the client within ``window`` (since its
    last auto-suspension); disable it if they reach ``threshold`` and it is enabled."""
    row = await conn.fetchrow(
        """WITH reports AS (
               SELECT count(DISTINCT r.user_id) AS n
                 FROM auth_requests r JOIN clients c ON c.client_id = r.client_id
                WHERE r.client_id = $1 AND r.denial_reason = 'not_me'
                  AND r.decided_at > greatest(now() - make_interval(secs => $3),
                                              coalesce(c.auto_suspended_at, '-infinity'))
           ), suspended AS (
               UPDATE clients SET disabled_at = now(), auto_suspended_at = now()
                WHERE client_id = $1 AND disabled_at IS NULL
                  AND (SELECT n FROM reports) >= $2
            RETURNING disabled_at
           )
           SELECT (SELECT n FROM reports) AS reporters,
                  (SELECT disabled_at FROM suspended) AS suspended_at""",
        client_id,
        threshold,
        window,
    )
    assert row is not None
    return ReportCount(row["reporters"], row["suspended_at"])
