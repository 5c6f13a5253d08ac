"""Wrong user codes (CIBA §7.1 ``user_code``): counted, and a user's code locked.

See backchannel/oauth/user_codes.py for the rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from backchannel.db.pool import Queryable


@dataclass(frozen=True)
class FailureCounts:
    user: int  # wrong codes for the user within the window, this one included
    client: int  # wrong codes the client sent within the window, this one included


async def count_client_failures(conn: Queryable, client_id: str, *, window: int) -> int:
    count: int = await conn.fetchval(
        """SELECT count(*) FROM user_code_failures
            WHERE client_id = $1 AND at > now() - make_interval(secs => $2)""",
        client_id,
        window,
    )
    return count


async def record_user_code_failure(
    conn: asyncpg.Connection, user_id: int, client_id: str, *, window: int
) -> FailureCounts:
    """Record one wrong code; the counts within the window afterwards."""
    row = await conn.fetchrow(
        """WITH failed AS (
               INSERT INTO user_code_failures (user_id, client_id) VALUES ($1, $2)
           )
           SELECT 1 + (SELECT count(*) FROM user_code_failures
                        WHERE user_id = $1 AND at > now() - make_interval(secs => $3)) AS user,
                  1 + (SELECT count(*) FROM user_code_failures
                        WHERE client_id = $2 AND at > now() - make_interval(secs => $3))
                  AS client""",
        user_id,
        client_id,
        window,
    )
    assert row is not None
    return FailureCounts(row["user"], row["client"])


async def lock_user_code(conn: asyncpg.Connection, user_id: int, *, seconds: int) -> datetime:
    """Refuse the user's code for ``seconds``; until when."""
    until: datetime = await conn.fetchval(
        """UPDATE users SET user_code_locked_until = now() + make_interval(secs => $2)
            WHERE user_id = $1 RETURNING user_code_locked_until""",
        user_id,
        seconds,
    )
    return until


async def clear_user_code_failures(conn: Queryable, user_id: int) -> None:
    """A right code: the user's wrong ones no longer count."""
    await conn.execute("DELETE FROM user_code_failures WHERE user_id = $1", user_id)


async def update_user_code_hash(conn: Queryable, user_id: int, user_code_hash: str) -> None:
    await conn.execute(
        "UPDATE users SET user_code_hash = $2 WHERE user_id = $1", user_id, user_code_hash
    )


async def delete_old_user_code_failures(conn: Queryable, *, older_than: int, limit: int) -> int:
    status: str = await conn.execute(
        """DELETE FROM user_code_failures
            WHERE id IN (SELECT id FROM user_code_failures
                          WHERE at < now() - make_interval(secs => $1) LIMIT $2)""",
        older_than,
        limit,
    )
    return int(status.rsplit(" ", 1)[-1])
