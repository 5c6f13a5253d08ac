"""Numbered SQL migrations, each applied once under an advisory lock.

Files in ``migrations/`` (shipped in the package: :mod:`backchannel.bundled`)
named ``NNN_description.sql`` run in order, each in its own transaction, and
are recorded in ``schema_migrations``. The advisory lock makes concurrent runs
from several replicas safe: the second waits, then finds nothing left to do.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from backchannel.bundled import bundled_dir

MIGRATIONS_DIR = bundled_dir("migrations")
_LOCK_KEY = 0x6263_6D69_6772  # "bcmigr"
_NAME = re.compile(r"^(\d{3,})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file name not understood: {path.name}")
        version = int(match.group(1))
        if version in found:
            raise ValueError(f"two migrations numbered {version}")
        found[version] = Migration(version, path.name, path.read_text())
    return [found[v] for v in sorted(found)]


@functools.cache
def shipped_migrations() -> tuple[Migration, ...]:
    """The migrations this version of the package ships, read once per process."""
    return tuple(load_migrations(MIGRATIONS_DIR))


async def select_missing_migrations(
    conn: asyncpg.Connection, migrations: tuple[Migration, ...]
) -> list[str]:
    """Names of ``migrations`` the database has not applied; one statement.

    A database ahead of this version (a newer release migrated it during a
    rolling update) is fine: only what this version needs is asked for.
    """
    applied = await conn.fetchval(
        "SELECT coalesce(array_agg(version), '{}') FROM schema_migrations"
    )
    done = set(applied)
    return [m.name for m in migrations if m.version not in done]


async def migrate(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations; return the names applied by this call."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer PRIMARY KEY,
                   name       text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in load_migrations(directory):
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            applied_now.append(migration.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now


async def pending_migrations(
    conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR
) -> list[str]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done: set[int] = set()
    if exists:
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    return [m.name for m in load_migrations(directory) if m.version not in done]
