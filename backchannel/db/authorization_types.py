"""The ``authorization_detail_types`` table: RFC 9396 types an operator registered."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from backchannel.db.pool import Queryable


@dataclass(frozen=True)
class AuthorizationType:
    type: str
    schema: dict[str, Any]
    description: str | None
    created_at: datetime


async def select_authorization_schemas(conn: Queryable) -> dict[str, dict[str, Any]]:
    """Every registered type's JSON Schema, by type."""
    rows = await conn.fetch("SELECT type, schema FROM authorization_detail_types")
    return {r["type"]: r["schema"] for r in rows}


async def select_authorization_types(conn: Queryable) -> list[AuthorizationType]:
    rows = await conn.fetch(
        "SELECT type, schema, description, created_at FROM authorization_detail_types ORDER BY type"
    )
    return [AuthorizationType(**dict(r)) for r in rows]


async def upsert_authorization_type(
    conn: asyncpg.Connection, type_name: str, schema: dict[str, Any], description: str | None
) -> bool:
    """Register or replace a type; True if it is new."""
    inserted: bool = await conn.fetchval(
        """INSERT INTO authorization_detail_types (type, schema, description)
           VALUES ($1, $2, $3)
           ON CONFLICT (type) DO UPDATE SET schema = EXCLUDED.schema,
                                            description = EXCLUDED.description
           RETURNING xmax = 0""",
        type_name,
        schema,
        description,
    )
    return inserted


async def delete_authorization_type(conn: asyncpg.Connection, type_name: str) -> bool:
    status: str = await conn.execute(
        "DELETE FROM authorization_detail_types WHERE type = $1", type_name
    )
    return status.endswith(" 1")
