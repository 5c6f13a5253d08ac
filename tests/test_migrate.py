"""The migration runner: order, once-only under concurrency, atomic per migration."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from backchannel.db.migrate import load_migrations, migrate, pending_migrations
from tests.support import postgres as pg

_names = itertools.count()


@pytest.fixture
async def empty_database_url(test_postgres: pg.TestPostgres) -> AsyncIterator[str]:
    """A database with no schema at all (the per-test databases come migrated)."""
    name = f"bc_empty_{next(_names)}"
    admin = await asyncpg.connect(test_postgres.admin_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {name}")
        yield pg.with_database(test_postgres.admin_dsn, name)
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def test_concurrent_runs_apply_each_migration_exactly_once(
    empty_database_url: str,
) -> None:
    connections = [await asyncpg.connect(empty_database_url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(conn) for conn in connections))
        applied = [name for result in results for name in result]
        expected = [m.name for m in load_migrations()]
        assert sorted(applied) == sorted(expected)
        assert len(applied) == len(set(applied))
        # One runner did all the work; the others waited on the lock and found nothing.
        assert sorted(len(r) for r in results) == [0, 0, 0, len(expected)]
        rows = await connections[0].fetch("SELECT name FROM schema_migrations ORDER BY version")
        assert [r["name"] for r in rows] == expected
    finally:
        for conn in connections:
            await conn.close()


async def test_pending_migrations_lists_what_migrate_will_apply(empty_database_url: str) -> None:
    conn = await asyncpg.connect(empty_database_url)
    try:
        before = await pending_migrations(conn)
        assert before == [m.name for m in load_migrations()]
        assert await migrate(conn) == before
        assert await pending_migrations(conn) == []
        assert await migrate(conn) == []
    finally:
        await conn.close()


async def test_a_failing_migration_is_rolled_back_and_not_recorded(
    empty_database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "001_first.sql").write_text("CREATE TABLE first (id int);")
    (tmp_path / "002_broken.sql").write_text(
        "CREATE TABLE second (id int); INSERT INTO nowhere VALUES (1);"
    )
    conn = await asyncpg.connect(empty_database_url)
    try:
        with pytest.raises(asyncpg.UndefinedTableError):
            await migrate(conn, tmp_path)
        assert await conn.fetchval("SELECT to_regclass('first') IS NOT NULL")
        assert await conn.fetchval("SELECT to_regclass('second') IS NULL")
        assert await pending_migrations(conn, tmp_path) == ["002_broken.sql"]
        # The advisory lock was released: another run can go ahead once the file is fixed.
        (tmp_path / "002_broken.sql").write_text("CREATE TABLE second (id int);")
        assert await migrate(conn, tmp_path) == ["002_broken.sql"]
    finally:
        await conn.close()


def test_migration_files_must_be_numbered_once(tmp_path: Path) -> None:
    (tmp_path / "001_a.sql").write_text("")
    (tmp_path / "001_b.sql").write_text("")
    with pytest.raises(ValueError, match="two migrations numbered 1"):
        load_migrations(tmp_path)
    (tmp_path / "001_b.sql").unlink()
    (tmp_path / "2-bad name.sql").write_text("")
    with pytest.raises(ValueError, match="not understood"):
        load_migrations(tmp_path)


def test_the_shipped_migrations_load_in_order() -> None:
    migrations = load_migrations()
    assert migrations[0].name == "001_core.sql"
    assert [m.version for m in migrations] == sorted(m.version for m in migrations)
