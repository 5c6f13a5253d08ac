"""The ``audit_events`` table. Rows are written in the transaction of the change they record.

Event names are listed, with their meaning, in ``docs/audit.md``.
"""

from __future__ import annotations

from typing import Any

from backchannel.db.pool import Queryable


async def insert_audit_event(
    conn: Queryable,
    event: str,
    *,
    client_id: str | None = None,
    user_id: int | None = None,
    auth_request_id: int | None = None,
    device_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        """INSERT INTO audit_events (event, client_id, user_id, auth_request_id, device_id, detail)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        event,
        client_id,
        user_id,
        auth_request_id,
        device_id,
        detail or {},
    )


async def select_audit_events(
    conn: Queryable,
    *,
    event: str | None = None,
    client_id: str | None = None,
    auth_request_id: int | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT id, at, event, client_id, user_id, auth_request_id, device_id, detail
             FROM audit_events
            WHERE ($1::text IS NULL OR event = $1)
              AND ($2::text IS NULL OR client_id = $2)
              AND ($3::bigint IS NULL OR auth_request_id = $3)
         ORDER BY id LIMIT $4""",
        event,
        client_id,
        auth_request_id,
        limit,
    )
    return [dict(r) for r in rows]
