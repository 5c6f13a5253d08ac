"""The ``service_secrets`` table: random secrets the service makes for itself."""

from __future__ import annotations

import os

from backchannel.db.pool import Queryable


async def ensure_service_secret(conn: Queryable, name: str, size: int = 32) -> bytes:
    """The secret ``name``, made at random on first use; every replica reads the same one.

    Of replicas starting together the first insert wins; the others' inserts do
    nothing and their next statement, with a new snapshot, reads the winner's.
    """
    value = await conn.fetchval(
        """INSERT INTO service_secrets (name, value) VALUES ($1, $2)
           ON CONFLICT (name) DO NOTHING RETURNING value""",
        name,
        os.urandom(size),
    )
    if value is None:
        value = await conn.fetchval("SELECT value FROM service_secrets WHERE name = $1", name)
    assert value is not None
    return bytes(value)
