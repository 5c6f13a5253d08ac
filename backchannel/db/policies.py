"""The ``policies`` table: governance rules, stored as rows (backchannel/policy/store.py
turns them into rules and back, validating them again on the way in).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from backchannel.db.pool import Queryable

_COLUMNS = "policy_id, name, effect, mode, enabled, description, target, conditions"


@dataclass(frozen=True)
class PolicyRow:
    name: str
    effect: str
    mode: str
    enabled: bool
    description: str | None
    target: dict[str, Any]
    conditions: dict[str, Any]
    policy_id: int | None = None


def _row(record: asyncpg.Record) -> PolicyRow:
    return PolicyRow(
        name=record["name"],
        effect=record["effect"],
        mode=record["mode"],
        enabled=record["enabled"],
        description=record["description"],
        target=record["target"],
        conditions=record["conditions"],
        policy_id=record["policy_id"],
    )


def _values(row: PolicyRow) -> tuple[Any, ...]:
    return (
        row.name,
        row.effect,
        row.mode,
        row.enabled,
        row.description,
        row.target,
        row.conditions,
    )


async def select_rules(conn: Queryable) -> list[PolicyRow]:
    """Every rule, enabled or not, by name."""
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM policies ORDER BY name")
    return [_row(r) for r in rows]


async def select_rule(conn: Queryable, name: str) -> PolicyRow | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM policies WHERE name = $1", name)
    return _row(row) if row else None


async def insert_rule(conn: asyncpg.Connection, rule: PolicyRow) -> PolicyRow:
    """Store a new rule; raises ``UniqueViolationError`` if the name is taken."""
    row = await conn.fetchrow(
        f"""INSERT INTO policies (name, effect, mode, enabled, description, target, conditions)
            VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_COLUMNS}""",
        *_values(rule),
    )
    assert row is not None
    return _row(row)


async def upsert_rules(conn: asyncpg.Connection, rules: Sequence[PolicyRow]) -> None:
    """Insert or overwrite rules by name (a rule keeps its id across imports)."""
    await conn.executemany(
        """INSERT INTO policies (name, effect, mode, enabled, description, target, conditions)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (name) DO UPDATE SET
               effect = EXCLUDED.effect, mode = EXCLUDED.mode, enabled = EXCLUDED.enabled,
               description = EXCLUDED.description, target = EXCLUDED.target,
               conditions = EXCLUDED.conditions, updated_at = now()
           WHERE (policies.effect, policies.mode, policies.enabled, policies.description,
                  policies.target, policies.conditions)
                 IS DISTINCT FROM (EXCLUDED.effect, EXCLUDED.mode, EXCLUDED.enabled,
                                   EXCLUDED.description, EXCLUDED.target, EXCLUDED.conditions)""",
        [_values(rule) for rule in rules],
    )


async def lock_policies(conn: asyncpg.Connection) -> None:
    """Serialise whole-policy imports; readers keep reading the committed rules."""
    await conn.execute("LOCK TABLE policies IN SHARE ROW EXCLUSIVE MODE")


async def delete_rules_except(conn: asyncpg.Connection, keep: Sequence[str]) -> list[str]:
    """Delete every rule not named in ``keep``; return the names deleted."""
    rows = await conn.fetch(
        "DELETE FROM policies WHERE name <> ALL($1::text[]) RETURNING name", list(keep)
    )
    return sorted(r["name"] for r in rows)


async def delete_rule(conn: asyncpg.Connection, name: str) -> PolicyRow | None:
    row = await conn.fetchrow(f"DELETE FROM policies WHERE name = $1 RETURNING {_COLUMNS}", name)
    return _row(row) if row else None


async def update_rule_enabled(
    conn: asyncpg.Connection, name: str, enabled: bool
) -> PolicyRow | None:
    row = await conn.fetchrow(
        f"""UPDATE policies SET enabled = $2, updated_at = now()
             WHERE name = $1 RETURNING {_COLUMNS}""",
        name,
        enabled,
    )
    return _row(row) if row else None
