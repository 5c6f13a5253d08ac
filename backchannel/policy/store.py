"""Policy rules: cached per replica, and changed only through the functions here.

Every change commits with a ``policy_changed`` audit row and a ``policy``
notification on ``bc_config``; each replica's :class:`PolicyStore` then marks
its rule set stale and reloads it on the next request, so a change takes
effect everywhere without a restart. A time-to-live bounds staleness should a
notification be missed, and a LISTEN reconnect marks the set stale too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from backchannel.db.audit import insert_audit_event
from backchannel.db.listener import CONFIG_CHANNEL, notify
from backchannel.db.policies import (
    PolicyRow,
    delete_rule,
    delete_rules_except,
    insert_rule,
    lock_policies,
    select_rule,
    select_rules,
    update_rule_enabled,
    upsert_rules,
)
from backchannel.db.pool import ConnectionPool, Queryable
from backchannel.policy.rules import PolicyError, Problem, Rule, parse_rule

log = logging.getLogger(__name__)

POLICY_EVENT = "policy"
CACHE_TTL_SECONDS = 60.0


def utc_now() -> datetime:
    return datetime.now(UTC)


def _rule(row: PolicyRow) -> Rule:
    """The rule a row holds, validated again: a row edited by hand into something
    invalid raises :class:`PolicyError`."""
    document = {
        "name": row.name,
        "effect": row.effect,
        "mode": row.mode,
        "enabled": row.enabled,
        "description": row.description,
        "target": row.target,
        "when": row.conditions,
    }
    return dataclasses.replace(parse_rule(document, ("policy", row.name)), policy_id=row.policy_id)


def _row(rule: Rule) -> PolicyRow:
    return PolicyRow(
        name=rule.name,
        effect=rule.effect,
        mode=rule.mode,
        enabled=rule.enabled,
        description=rule.description,
        target=rule.target.to_json(),
        conditions=rule.when.to_json(),
    )


async def load_rules(conn: Queryable) -> list[Rule]:
    """Every stored rule, enabled or not, by name."""
    return [_rule(row) for row in await select_rules(conn)]


async def load_rule(conn: Queryable, name: str) -> Rule | None:
    row = await select_rule(conn, name)
    return _rule(row) if row is not None else None


@dataclass(frozen=True)
class RuleSet:
    """The enabled rules, and whether any of them looks at the user's groups."""

    rules: tuple[Rule, ...] = ()
    needs_groups: bool = field(default=False)

    @classmethod
    def of(cls, rules: Sequence[Rule]) -> RuleSet:
        enabled = tuple(r for r in rules if r.enabled)
        return cls(enabled, any(r.uses_groups for r in enabled))


class PolicyStore:
    """This replica's rule set. ``clock`` gives rules their "now" (replaceable in tests)."""

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        ttl: float = CACHE_TTL_SECONDS,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._pool = pool
        self._ttl = ttl
        self._rules = RuleSet()
        self._loaded_at = float("-inf")
        self._stale = True
        self._lock = asyncio.Lock()
        self.clock = clock

    @classmethod
    async def load(
        cls,
        pool: ConnectionPool,
        *,
        ttl: float = CACHE_TTL_SECONDS,
        clock: Callable[[], datetime] = utc_now,
    ) -> PolicyStore:
        """A store with the rules loaded; an invalid stored rule fails here, loudly."""
        store = cls(pool, ttl=ttl, clock=clock)
        await store.reload()
        return store

    async def reload(self) -> None:
        # Cleared before reading, so an event arriving meanwhile marks it stale again.
        self._stale = False
        try:
            rules = await load_rules(self._pool)
        except BaseException:
            self._stale = True
            raise
        self._rules = RuleSet.of(rules)
        self._loaded_at = time.monotonic()

    async def current(self) -> RuleSet:
        """The rule set; reloaded first if a change was announced or the TTL ran out."""
        if self._stale or time.monotonic() - self._loaded_at > self._ttl:
            async with self._lock:
                if self._stale or time.monotonic() - self._loaded_at > self._ttl:
                    try:
                        await self.reload()
                    except PolicyError:  # only a hand-edited row gets here; retry after the TTL
                        log.exception("stored policy is invalid; keeping the previous rules")
                        self._loaded_at = time.monotonic()
        return self._rules

    def invalidate(self) -> None:
        """Reload before the next evaluation (also after a LISTEN reconnect)."""
        self._stale = True

    def on_config_event(self, payload: str) -> None:
        """``bc_config`` handler: a ``policy`` event marks the rule set stale."""
        if payload == POLICY_EVENT:
            self.invalidate()


@dataclass(frozen=True)
class ImportSummary:
    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]
    unchanged: tuple[str, ...]


async def add_rule(conn: asyncpg.Connection, rule: Rule, *, actor: str = "operator") -> Rule:
    """Store a new rule; :class:`PolicyError` if its name is taken."""
    try:
        async with conn.transaction():
            stored = _rule(await insert_rule(conn, _row(rule)))
            await _announce(conn, "add", {"rule": stored.to_json()}, actor)
    except asyncpg.UniqueViolationError:
        raise PolicyError([Problem(("name",), f"a rule named {rule.name!r} exists")]) from None
    return stored


async def remove_rule(
    conn: asyncpg.Connection, name: str, *, actor: str = "operator"
) -> Rule | None:
    """Delete a rule; ``None`` if there is none by that name."""
    async with conn.transaction():
        row = await delete_rule(conn, name)
        removed = _rule(row) if row is not None else None
        if removed is not None:
            await _announce(conn, "remove", {"rule": removed.to_json()}, actor)
    return removed


async def set_rule_enabled(
    conn: asyncpg.Connection, name: str, enabled: bool, *, actor: str = "operator"
) -> Rule | None:
    """Enable or disable a rule; ``None`` if there is none by that name."""
    async with conn.transaction():
        row = await update_rule_enabled(conn, name, enabled)
        rule = _rule(row) if row is not None else None
        if rule is not None:
            await _announce(conn, "enable" if enabled else "disable", {"name": name}, actor)
    return rule


async def replace_rules(
    conn: asyncpg.Connection, rules: Sequence[Rule], *, actor: str = "operator"
) -> ImportSummary:
    """Make ``rules`` the whole policy, atomically; unchanged rules keep their ids."""
    async with conn.transaction():
        # One import at a time; evaluation keeps reading the old rules until commit.
        await lock_policies(conn)
        before = {r.name: r for r in await load_rules(conn)}
        names = [r.name for r in rules]
        added = tuple(n for n in names if n not in before)
        changed = tuple(r.name for r in rules if r.name in before and before[r.name] != r)
        unchanged = tuple(r.name for r in rules if r.name in before and before[r.name] == r)
        await upsert_rules(conn, [_row(rule) for rule in rules])
        removed = tuple(await delete_rules_except(conn, names))
        summary = ImportSummary(added, changed, removed, unchanged)
        if added or changed or removed:
            await _announce(
                conn,
                "import",
                {"added": list(added), "changed": list(changed), "removed": list(removed)},
                actor,
            )
    return summary


async def _announce(
    conn: asyncpg.Connection, action: str, detail: dict[str, object], actor: str
) -> None:
    await insert_audit_event(
        conn, "policy_changed", detail={"actor": actor, "action": action, **detail}
    )
    await notify(conn, CONFIG_CHANNEL, POLICY_EVENT)
