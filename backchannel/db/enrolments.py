"""The ``enrolment_codes`` table: one-time codes that let a phone become a user's device.

Only the SHA-256 of a code is stored. A code is spent by one conditional
UPDATE, so of concurrent enrolments exactly one wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from backchannel.db.pool import Queryable


@dataclass(frozen=True)
class IssuedCode:
    expires_at: datetime
    expires_in: int


@dataclass(frozen=True)
class SpentCode:
    user_id: int
    display_name: str
    issued_by: str
    email: str | None = None


async def insert_enrolment_code(
    conn: asyncpg.Connection, code_hash: bytes, user_id: int, issued_by: str, ttl: int
) -> IssuedCode:
    row = await conn.fetchrow(
        """INSERT INTO enrolment_codes (code_hash, user_id, issued_by, expires_at)
           VALUES ($1, $2, $3, now() + make_interval(secs => $4))
        RETURNING expires_at""",
        code_hash,
        user_id,
        issued_by,
        ttl,
    )
    assert row is not None
    return IssuedCode(row["expires_at"], ttl)


async def spend_enrolment_code(
    conn: asyncpg.Connection, code_hash: bytes, device_id: str
) -> SpentCode | None:
    """Mark an unused, unexpired code of an enabled user as used by ``device_id``.

    ``None`` if the code is unknown, spent, expired, or its user is disabled.
    """
    row = await conn.fetchrow(
        """UPDATE enrolment_codes e SET used_at = now(), device_id = $2
             FROM users u
            WHERE e.code_hash = $1 AND e.used_at IS NULL AND e.expires_at > now()
              AND u.user_id = e.user_id AND u.disabled_at IS NULL
        RETURNING e.user_id, u.display_name, e.issued_by, u.email""",
        code_hash,
        device_id,
    )
    return SpentCode(**dict(row)) if row else None


async def delete_stale_enrolment_codes(conn: Queryable, *, older_than: int, limit: int) -> int:
    """Delete up to ``limit`` codes (spent or not) that expired more than ``older_than``
    seconds ago; the number deleted. Enrolments themselves are in the audit trail."""
    status: str = await conn.execute(
        """DELETE FROM enrolment_codes
            WHERE code_hash IN (SELECT code_hash FROM enrolment_codes
                                 WHERE expires_at < now() - make_interval(secs => $1)
                                 LIMIT $2)""",
        older_than,
        limit,
    )
    return int(status.rsplit(" ", 1)[-1])
