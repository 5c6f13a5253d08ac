"""The assurance columns of ``auth_requests``: what a request demands, what its approval used.

``user_verification`` and ``acr`` are written with the request (``insert_auth_request``);
``amr`` with its approval, in the decision's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from backchannel.db.pool import Queryable


async def record_authentication_methods(
    conn: Queryable, auth_request_id: int, amr: Sequence[str]
) -> None:
    """Store how a request was approved (RFC 8176 ``amr`` values); in the decision's
    transaction."""
    await conn.execute(
        "UPDATE auth_requests SET amr = $2 WHERE id = $1", auth_request_id, list(amr)
    )


async def select_user_verification(conn: Queryable, id_hash: bytes) -> str | None:
    """What a request demands: 'required', 'would_require' or None."""
    value: str | None = await conn.fetchval(
        "SELECT user_verification FROM auth_requests WHERE id_hash = $1", id_hash
    )
    return value
