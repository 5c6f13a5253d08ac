"""The ``used_jtis`` table: the replay cache for client assertions and signed requests."""

from __future__ import annotations

from datetime import datetime

from backchannel.db.pool import Queryable


async def insert_jti(
    conn: Queryable,
    *,
    issuer: str,
    purpose: str,
    jti: str,
    expires_at: datetime,
) -> bool:
    """Remember ``jti`` until ``expires_at``; False when it is already remembered.

    A row past its expiry that the purge has not removed yet is taken over, so
    only live entries count as replays. Of concurrent callers exactly one wins.
    """
    inserted = await conn.fetchval(
        """INSERT INTO used_jtis (issuer, purpose, jti, expires_at)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (issuer, purpose, jti) DO UPDATE SET expires_at = EXCLUDED.expires_at
            WHERE used_jtis.expires_at < now()
           RETURNING true""",
        issuer,
        purpose,
        jti,
        expires_at,
    )
    return bool(inserted)


async def delete_expired_jtis(conn: Queryable, *, limit: int = 10000) -> int:
    """Delete up to ``limit`` expired rows; the number deleted."""
    status: str = await conn.execute(
        """DELETE FROM used_jtis
            WHERE ctid IN (SELECT ctid FROM used_jtis WHERE expires_at < now() LIMIT $1)""",
        limit,
    )
    return int(status.rsplit(" ", 1)[-1])
