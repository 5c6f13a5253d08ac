"""The ``user_groups`` table: the groups a user belongs to, for group-based rules."""

from __future__ import annotations

import asyncpg

from backchannel.db.pool import Queryable


async def insert_user_group(conn: asyncpg.Connection, user_id: int, group_name: str) -> bool:
    """Add the user to the group; ``False`` if they were in it already."""
    status: str = await conn.execute(
        """INSERT INTO user_groups (user_id, group_name) VALUES ($1, $2)
           ON CONFLICT DO NOTHING""",
        user_id,
        group_name,
    )
    return status == "INSERT 0 1"


async def delete_user_group(conn: asyncpg.Connection, user_id: int, group_name: str) -> bool:
    """Remove the user from the group; ``False`` if they were not in it."""
    status: str = await conn.execute(
        "DELETE FROM user_groups WHERE user_id = $1 AND group_name = $2", user_id, group_name
    )
    return status == "DELETE 1"


async def select_user_groups(conn: Queryable, user_id: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT group_name FROM user_groups WHERE user_id = $1 ORDER BY group_name", user_id
    )
    return [r["group_name"] for r in rows]
