"""``backchannel migrate``: apply pending schema migrations."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import asyncpg

from backchannel.cli.database import Database, open_database
from backchannel.cli.output import CommandError, Context
from backchannel.db.migrate import migrate
from backchannel.db.pool import connect


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    command = commands.add_parser(
        "migrate",
        parents=[common],
        help="apply pending migrations",
        description="Apply pending migrations, each once, in order. Safe to run from several "
        "replicas at once: an advisory lock serialises them.",
    )
    command.set_defaults(run=run_migrate)


async def apply_migrations(dsn: str) -> list[str]:
    try:
        conn = await connect(dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise CommandError(f"cannot connect to the database: {exc}") from exc
    try:
        return await migrate(conn)
    finally:
        await conn.close()


def report_migrations(ctx: Context, applied: list[str]) -> None:
    ctx.out.result(
        {"applied": applied},
        lambda: "\n".join(f"applied {name}" for name in applied) or "nothing to apply",
    )


def run_migrate(ctx: Context) -> None:
    database: Database
    create = getattr(ctx.args, "create_data_dir", False)
    with open_database(ctx.settings, create=create) as database:
        report_migrations(ctx, asyncio.run(apply_migrations(database.dsn)))
