"""The database a command works on.

``BACKCHANNEL_DATABASE_URL`` when set; otherwise the embedded PostgreSQL in
``<data_dir>/pgdata``, the one ``backchannel dev`` uses, so that every command
run in the same folder sees the dev server's clients and users. The embedded
database is migrated automatically; a configured one must be migrated with
``backchannel migrate`` (or ``serve --migrate``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import asyncpg

from backchannel.cli.embedded_postgres import (
    EmbeddedPostgresUnavailable,
    start_embedded_postgres,
)
from backchannel.cli.output import CommandError, Context
from backchannel.db.migrate import migrate, pending_migrations
from backchannel.db.pool import connect
from backchannel.settings import Settings

DbHandler = Callable[[Context, asyncpg.Connection], Awaitable[None]]


@dataclass(frozen=True)
class Database:
    dsn: str
    embedded: bool

    def describe(self, settings: Settings) -> str:
        if self.embedded:
            return f"embedded PostgreSQL in {settings.data_dir / 'pgdata'}"
        return "BACKCHANNEL_DATABASE_URL"


@contextlib.contextmanager
def open_database(settings: Settings, *, create: bool = False) -> Iterator[Database]:
    """The configured database, or the embedded one started (and later stopped) here.

    The embedded server is shared: it keeps running while another process
    (``backchannel dev``) still uses it. A new embedded database is made only
    when ``create`` is true (``dev``, ``--create-data-dir``): a command run in
    the wrong folder should say so, not work on an empty database.
    """
    if settings.database_url is not None:
        yield Database(settings.database_url, embedded=False)
        return
    pgdata = settings.data_dir / "pgdata"
    if not create and not pgdata.is_dir():
        raise CommandError(
            f"no database: BACKCHANNEL_DATABASE_URL is unset and there is no embedded database "
            f"in {pgdata.absolute()} (BACKCHANNEL_DATA_DIR). Run this where `backchannel dev` "
            "runs, set BACKCHANNEL_DATABASE_URL or BACKCHANNEL_DATA_DIR, or add "
            "--create-data-dir to start a new, empty one there"
        )
    try:
        server = start_embedded_postgres(settings.data_dir / "pgdata")
    except EmbeddedPostgresUnavailable as exc:
        raise CommandError(str(exc)) from None
    except Exception as exc:
        raise CommandError(
            f"cannot start the embedded PostgreSQL in {settings.data_dir / 'pgdata'}: {exc} "
            "(or set BACKCHANNEL_DATABASE_URL)"
        ) from exc
    try:
        yield Database(server.dsn(), embedded=True)
    finally:
        server.stop()


async def connect_checked(database: Database) -> asyncpg.Connection:
    """A connection to a migrated database (the embedded one is migrated here)."""
    try:
        conn = await connect(database.dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise CommandError(f"cannot connect to the database: {exc}") from exc
    try:
        if database.embedded:
            await migrate(conn)
        else:
            pending = await pending_migrations(conn)
            if pending:
                raise CommandError(
                    f"the database has unapplied migrations ({', '.join(pending)}); "
                    "run `backchannel migrate` first"
                )
    except BaseException:
        await conn.close()
        raise
    return conn


async def check_migrated(database: Database) -> None:
    """Fail unless the database can be reached and has every migration applied."""
    conn = await connect_checked(database)
    await conn.close()


def database_command(handler: DbHandler) -> Callable[[Context], None]:
    """Wrap ``handler(ctx, conn)`` into a command run against the database."""

    def run(ctx: Context) -> None:
        async def with_connection(database: Database) -> None:
            conn = await connect_checked(database)
            try:
                await handler(ctx, conn)
            finally:
                await conn.close()

        create = getattr(ctx.args, "create_data_dir", False)
        with open_database(ctx.settings, create=create) as database:
            asyncio.run(with_connection(database))

    return run
