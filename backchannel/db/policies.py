"""The ``policies`` table: governance rules (backchannel/policy/rules.py).

Rows hold validated rules only; reading one back validates it again, so a row
edited by hand into something invalid raises :class:`PolicyError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import asyncpg

from backchannel.db.pool import Queryable
from backchannel.policy.rules import Rule, parse_rule

_COLUMNS = "policy_id, name, effect, mode, enabled, description, target, conditions"


def _rule(row: asyncpg.Record) -> Rule:
    document = {
        "name": row["name"],
        "effect": row["effect"],
        "mode": row["mode"],
        "enabled": row["enabled"],
        "description": row["description"],
        "target": row["target"],
        "when": row["conditions"],
    }
    rule = parse_rule(document, ("policy", row["name"]))
    return dataclasses.replace(rule, policy_id=row["policy_id"])


def _values(rule: Rule) -> tuple[Any, ...]:
    return (
        rule.name,
        rule.effect,
        rule.mode,
        rule.enabled,
        rule.description,
        rule.target.to_json(),
        rule.when.to_json(),
    )


async def select_rules(conn: Queryable) -> list[Rule]:
    """Every rule, enabled or not, by name."""
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM policies ORDER BY name")
    return [_rule(r) for r in rows]


async def select_rule(conn: Queryable, name: str) -> Rule | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM policies WHERE name = $1", name)
    return _rule(row) if row else None


async def insert_rule(conn: asyncpg.Connection, rule: Rule) -> Rule:
    """Store a new rule; raises ``UniqueViolationError`` if the name is taken."""
    row = await conn.fetchrow(
        f"""INSERT INTO policies (name, effect, mode, enabled, description, target, conditions)
            VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_COLUMNS}""",
        *_values(rule),
    )
    assert row is not None
    return _rule(row)


async def upsert_rules(conn: asyncpg.Connection, rules: Sequence[Rule]) -> None:
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


async def delete_rules_except(conn: asyncpg.Connection, keep: Sequence[str]) -> list[str]:
    """Delete every rule not named in ``keep``; return the names deleted."""
    rows = await conn.fetch(
        "DELETE FROM policies WHERE name <> ALL($1::text[]) RETURNING name", list(keep)
    )
    return sorted(r["name"] for r in rows)


async def delete_rule(conn: asyncpg.Connection, name: str) -> Rule | None:
    row = await conn.fetchrow(f"DELETE FROM policies WHERE name = $1 RETURNING {_COLUMNS}", name)
    return _rule(row) if row else None


async def update_rule_enabled(conn: asyncpg.Connection, name: str, enabled: bool) -> Rule | None:
    row = await conn.fetchrow(
        f"""UPDATE policies SET enabled = $2, updated_at = now()
             WHERE name = $1 RETURNING {_COLUMNS}""",
        name,
        enabled,
    )
    return _rule(row) if row else None
